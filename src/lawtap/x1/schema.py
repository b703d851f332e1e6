"""The ETSI X1 schemas (TS 103 221-1 with TS 103 280) and XSD validation of X1 documents.

X1 is specified by its XSDs: an ADMF request that violates them must be refused with the
validator's own words, so the schema is the first gate every request passes, before lawtap
reads a single field. The XSDs' ``xs:import`` elements carry no ``schemaLocation``, so the
three files are loaded together with explicit namespace locations.

Where the files come from, in this order:

1. ``$LAWTAP_SHARED/standards/etsi/`` when ``LAWTAP_SHARED`` is set (an error if the files are
   missing there: an explicit setting that silently falls back would hide a misconfiguration);
2. ``../shared/standards/etsi/`` beside the repository (the project's reference copy);
3. the copies vendored in this package (``lawtap/x1/xsd/``, ETSI BSD-3 licence beside them),
   so an installed lawtap validates X1 without ``shared/``.

The vendored copies are byte-identical to the shared ones (the test suite checks this).
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.etree.ElementTree import Element

import xmlschema
from xmlschema import XMLResource

from lawtap.errors import LawtapError

X1_NS = "http://uri.etsi.org/03221/X1/2017/10"
COMMON_NS = "http://uri.etsi.org/03280/common/2017/07"
HASHED_ID_NS = "http://uri.etsi.org/03221/X1/2017/10/HashedID"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

#: The X1 protocol version lawtap speaks (the ``version`` attribute of the XSD it validates with).
X1_VERSION = "v1.22.1"

X1_XSD = "TS_103_221_01.xsd"
HASHED_ID_XSD = "TS_103_221_01_HashedID.xsd"
COMMON_XSD = "TS_103_280.xsd"

VENDORED_DIR = Path(__file__).resolve().parent / "xsd"
_REPO_SHARED = Path(__file__).resolve().parents[3].parent / "shared"

#: At most this many distinct XSD issues are reported for one document; the first ones are
#: what an ADMF operator needs, and a hostile document must not make the answer huge.
MAX_ISSUES = 20


@dataclass(frozen=True)
class SchemaFiles:
    """The three XSD files of X1, and whether they are the shared or the vendored copies."""

    x1: Path
    hashed_id: Path
    common: Path
    origin: Literal["shared", "vendored"]


def vendored_files() -> SchemaFiles:
    """The copies shipped inside the package."""
    return SchemaFiles(
        x1=VENDORED_DIR / X1_XSD,
        hashed_id=VENDORED_DIR / HASHED_ID_XSD,
        common=VENDORED_DIR / COMMON_XSD,
        origin="vendored",
    )


def shared_files(shared_root: Path) -> SchemaFiles:
    """The copies in a ``shared/`` folder laid out as ``standards/etsi/<spec>/<file>``."""
    etsi = shared_root / "standards" / "etsi"
    return SchemaFiles(
        x1=etsi / "103221-1" / X1_XSD,
        hashed_id=etsi / "103221-1" / HASHED_ID_XSD,
        common=etsi / "103280" / COMMON_XSD,
        origin="shared",
    )


def _complete(files: SchemaFiles) -> bool:
    return files.x1.is_file() and files.hashed_id.is_file() and files.common.is_file()


def locate_schema_files() -> SchemaFiles:
    """Find the XSDs: ``$LAWTAP_SHARED``, else ``../shared`` beside the repo, else vendored."""
    env = os.environ.get("LAWTAP_SHARED")
    if env:
        files = shared_files(Path(env))
        if not _complete(files):
            raise LawtapError(
                f"LAWTAP_SHARED={env}: no X1 schemas under standards/etsi/ "
                f"(need 103221-1/{X1_XSD}, 103221-1/{HASHED_ID_XSD}, 103280/{COMMON_XSD})"
            )
        return files
    files = shared_files(_REPO_SHARED)
    return files if _complete(files) else vendored_files()


_lock = threading.Lock()
_cache: dict[SchemaFiles, xmlschema.XMLSchema10] = {}


def load_schema(files: SchemaFiles | None = None) -> xmlschema.XMLSchema10:
    """The compiled X1 schema (built once per file set: building takes about half a second)."""
    files = files or locate_schema_files()
    with _lock:
        schema = _cache.get(files)
        if schema is None:
            try:
                schema = xmlschema.XMLSchema10(
                    str(files.x1),
                    locations=[(COMMON_NS, str(files.common)), (HASHED_ID_NS, str(files.hashed_id))],
                    allow="local",
                    defuse="always",
                )
            except (xmlschema.XMLSchemaException, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LawtapError(f"cannot load the X1 schema {files.x1}: {first}") from exc
            _cache[files] = schema
        return schema


@dataclass(frozen=True)
class SchemaIssue:
    """One reason a document is not a valid X1 document, in xmlschema's words."""

    reason: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.reason} @ {self.path}" if self.path else self.reason


@dataclass(frozen=True)
class CheckedDocument:
    """A document after parsing and XSD validation.

    ``root`` is the parsed tree whenever the bytes were well-formed XML, valid or not: the
    caller still needs it to address an error response to the right ADMF and transaction.
    """

    root: Element | None
    issues: tuple[SchemaIssue, ...]

    @property
    def valid(self) -> bool:
        return not self.issues


def _one_line(text: str) -> str:
    return " ".join(text.split())


def check_document(
    data: bytes,
    expect_root: str | None = "X1Request",
    schema: xmlschema.XMLSchema10 | None = None,
) -> CheckedDocument:
    """Parse ``data`` and validate it against the X1 XSD; never raises for bad input.

    Parsing is defused: entity declarations, external resources and schema location hints
    in the document are refused, so a request cannot make lawtap read files or the network.
    ``expect_root`` is the local name of the X1-namespace root element the caller accepts
    (``None``: any element the schema declares, e.g. to check lawtap's own responses).
    """
    schema = schema or load_schema()
    try:
        resource = XMLResource(io.BytesIO(data), defuse="always", allow="none")
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's problem
        return CheckedDocument(None, (SchemaIssue(_one_line(str(exc)) or type(exc).__name__),))
    root = resource.root
    issues: list[SchemaIssue] = []
    seen: set[tuple[str, str | None]] = set()

    def add(issue: SchemaIssue) -> None:
        key = (issue.reason, issue.path)
        if key not in seen and len(issues) < MAX_ISSUES:
            seen.add(key)
            issues.append(issue)

    if expect_root is not None and root.tag != f"{{{X1_NS}}}{expect_root}":
        add(SchemaIssue(f"the root element is {root.tag!r}, expected {{{X1_NS}}}{expect_root}", "/"))
    try:
        for error in schema.iter_errors(resource, use_location_hints=False):
            add(SchemaIssue(_one_line(str(error.reason or error.message)), error.path))
            if len(issues) >= MAX_ISSUES:
                break
    except Exception as exc:  # noqa: BLE001 - xmlschema raises for e.g. an unknown xsi:type
        add(SchemaIssue(_one_line(str(exc)) or type(exc).__name__))
    return CheckedDocument(root, tuple(issues))
