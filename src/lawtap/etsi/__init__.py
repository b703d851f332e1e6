"""ETSI lawful-interception handover: PS-PDU encoding, durable delivery and a reference LEMF.

Modules (import what you need; this package imports nothing heavy by itself):

* :mod:`lawtap.etsi.schema` — the TS 102 232 ASN.1 modules compiled with asn1tools (vendored
  copy in ``asn1/``, ETSI BSD-3 licence), ``encode``/``decode`` with one clean error type.
* :mod:`lawtap.etsi.pdu` — ``ps_pdu_*`` builders (IP access IRI/CC, e-mail IRI/CC, IP
  multimedia IRI/CC, TRI keep-alive and acknowledgement), :class:`~lawtap.etsi.pdu.IpccTemplate`
  (the hot path, byte-identical to the schema encoder), and ``scan``/``peek`` (numba framing and
  header extraction).
* :mod:`lawtap.etsi.queue` — :class:`~lawtap.etsi.queue.DurableQueue`, the append-only on-disk
  queue per agency and handover interface.
* :mod:`lawtap.etsi.mediator` — :class:`~lawtap.etsi.mediator.Mediator`: sequence numbers per
  (LIID, CIN), HI2/HI3 senders with TLS, keep-alives, acknowledgements and back-off.
* :mod:`lawtap.etsi.lemf` — :class:`~lawtap.etsi.lemf.LemfStore` and
  :class:`~lawtap.etsi.lemf.LemfServer`: the reference receiver (continuity checks, duplicates
  dropped, CC to pcap per LIID, IRI records with :data:`~lawtap.etsi.lemf.IRI_SCHEMA`).

What is intercepted is decided elsewhere (warrants, collector); this package only encodes and
delivers what it is given.
"""
