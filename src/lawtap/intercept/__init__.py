"""Lawful interception: warrants, identities, collector, ETSI mediation, LEMF and the audit trail."""
