"""Internet messages as bytes (layer L1, sans-IO).

- :mod:`.headers`: read header fields (RFC 5322 §2.2), decode RFC 2047 words, write
  trace and identification fields (Received, Return-Path, Delivered-To, Date, Message-ID).
- :mod:`.structure`: the MIME tree with exact byte offsets, parsed once at delivery and
  cached for IMAP (ENVELOPE, BODYSTRUCTURE, BODY[section], BINARY.SIZE).
- :mod:`.bodystructure`: IMAP syntax for a cached structure.
- :mod:`.envelope`, :mod:`.params`: address lists and MIME parameters (RFC 2231).
"""
