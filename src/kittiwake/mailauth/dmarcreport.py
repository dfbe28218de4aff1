"""DMARC aggregate reports (RFC 7489 §7.2, appendix C): read one out of a report message
and summarise it for a person (`kittiwake dmarc report`).

Receivers mail the XML report gzip- or zip-compressed (or plain) as an attachment, or as
the whole body. The MIME walk takes the first part that looks like a report by type or
file name; decompression stops at a size limit (a small zip can expand enormously); the
XML parser refuses any DTD, entity declaration or external reference (the "billion laughs"
and XXE attacks need them, and a report never does), so a hostile report costs at most the
size limit.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, NoReturn
from xml.etree import ElementTree
from xml.parsers import expat

MAX_XML = 20 * 1024 * 1024  # decompressed bytes

_XML_TYPES = {"text/xml", "application/xml"}
_GZIP_TYPES = {"application/gzip", "application/x-gzip", "application/gzip-compressed"}
_ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}


class ReportError(ValueError):
    """Not a readable DMARC aggregate report."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One <record>: a sending IP and what happened to its messages."""

    source_ip: str
    count: int
    disposition: str  # none / quarantine / reject, as applied
    dkim: str  # policy_evaluated: pass / fail (aligned DKIM)
    spf: str  # policy_evaluated: pass / fail (aligned SPF)
    header_from: str
    envelope_from: str = ""
    dkim_domains: tuple[tuple[str, str], ...] = ()  # (domain, result) auth_results
    spf_domains: tuple[tuple[str, str], ...] = ()
    reasons: tuple[str, ...] = ()  # policy override types

    @property
    def passed(self) -> bool:
        return self.dkim == "pass" or self.spf == "pass"


@dataclass(frozen=True, slots=True)
class AggregateReport:
    org_name: str
    email: str
    report_id: str
    begin: dt.datetime
    end: dt.datetime
    domain: str
    policy: dict[str, str]  # policy_published: p, sp, pct, adkim, aspf
    rows: tuple[ReportRow, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.rows)

    @property
    def passed(self) -> int:
        return sum(r.count for r in self.rows if r.passed)


# --- extraction ---------------------------------------------------------------------------

def report_xml(message: bytes) -> bytes:
    """The report's XML from a report message (or from a bare gzip/zip/XML payload)."""
    if message[:2] == b"\x1f\x8b" or message[:4] == b"PK\x03\x04" or message.lstrip()[:1] == b"<":
        return _unpack(message, "")
    msg = email.message_from_bytes(message, policy=email.policy.compat32)
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type().lower()
        filename = (part.get_filename() or "").lower()
        if not (ctype in _XML_TYPES | _GZIP_TYPES | _ZIP_TYPES
                or filename.endswith((".xml", ".xml.gz", ".gz", ".zip"))):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            return _unpack(payload, ctype if ctype != "application/octet-stream" else filename)
    raise ReportError("no report attachment found")


def _unpack(data: bytes, hint: str) -> bytes:
    if data[:2] == b"\x1f\x8b" or hint in _GZIP_TYPES or hint.endswith(".gz"):
        return _gunzip(data)
    if data[:4] == b"PK\x03\x04" or hint in _ZIP_TYPES or hint.endswith(".zip"):
        return _unzip(data)
    if len(data) > MAX_XML:
        raise ReportError("report too large")
    return data


def _gunzip(data: bytes) -> bytes:
    # zlib with wbits 16+MAX_WBITS reads the gzip format; max_length bounds the output.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_XML + 1)
    except zlib.error as exc:
        raise ReportError(f"bad gzip data: {exc}") from None
    if len(out) > MAX_XML:
        raise ReportError("report too large once decompressed")
    return out


def _unzip(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [i for i in archive.infolist() if i.filename.lower().endswith(".xml")]
            if not names:
                raise ReportError("no .xml file in the zip archive")
            with archive.open(names[0]) as f:
                out = f.read(MAX_XML + 1)  # file_size can lie; the read cannot
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        raise ReportError(f"bad zip data: {exc}") from None
    if len(out) > MAX_XML:
        raise ReportError("report too large once decompressed")
    return out


def parse_xml(data: bytes) -> ElementTree.Element:
    """XML → element tree with expat, refusing DTDs and entities outright."""
    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()

    def refuse(*_args: Any) -> NoReturn:
        raise ReportError("XML with a DTD or entities is refused")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = lambda tag, attrs: builder.start(_local(tag), attrs)
    parser.EndElementHandler = lambda tag: builder.end(_local(tag))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ReportError(f"bad XML: {exc}") from None
    root = builder.close()
    return root


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]  # DMARCbis reports add a namespace


# --- the report ---------------------------------------------------------------------------

def _text(node: ElementTree.Element | None, path: str, default: str = "") -> str:
    if node is None:
        return default
    found = node.find(path)
    return (found.text or "").strip() if found is not None and found.text else default


def _when(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(text), dt.UTC)
    except (ValueError, OverflowError, OSError):
        return dt.datetime.fromtimestamp(0, dt.UTC)


def parse_report(message: bytes) -> AggregateReport:
    """The aggregate report carried by `message`; ReportError if there is none."""
    root = parse_xml(report_xml(message))
    if root.tag != "feedback":
        raise ReportError(f"not a DMARC report (root element {root.tag!r})")
    meta = root.find("report_metadata")
    published = root.find("policy_published")
    rows = []
    for rec in root.findall("record"):
        row = rec.find("row")
        evaluated = row.find("policy_evaluated") if row is not None else None
        auth = rec.find("auth_results")
        try:
            count = int(_text(row, "count", "0"))
        except ValueError:
            count = 0
        rows.append(ReportRow(
            source_ip=_text(row, "source_ip"), count=count,
            disposition=_text(evaluated, "disposition", "none"),
            dkim=_text(evaluated, "dkim", "fail"), spf=_text(evaluated, "spf", "fail"),
            header_from=_text(rec, "identifiers/header_from"),
            envelope_from=_text(rec, "identifiers/envelope_from"),
            dkim_domains=tuple((_text(d, "domain"), _text(d, "result"))
                               for d in (auth.findall("dkim") if auth is not None else [])),
            spf_domains=tuple((_text(s, "domain"), _text(s, "result"))
                              for s in (auth.findall("spf") if auth is not None else [])),
            reasons=tuple(_text(r, "type") for r in
                          (evaluated.findall("reason") if evaluated is not None else []))))
    policy = {}
    if published is not None:
        policy = {child.tag: (child.text or "").strip() for child in published
                  if child.tag != "domain"}
    return AggregateReport(
        org_name=_text(meta, "org_name"), email=_text(meta, "email"),
        report_id=_text(meta, "report_id"), begin=_when(_text(meta, "date_range/begin")),
        end=_when(_text(meta, "date_range/end")), domain=_text(published, "domain"),
        policy=policy, rows=tuple(rows))


def render(report: AggregateReport) -> str:
    """A plain-text summary: who reported, what passed, and which sources failed."""
    failed = report.total - report.passed
    policy = " ".join(f"{k}={v}" for k, v in report.policy.items() if v)
    lines = [
        f"DMARC aggregate report for {report.domain} from {report.org_name}"
        + (f" <{report.email}>" if report.email else ""),
        f"  period:  {report.begin:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
        f"  (report id {report.report_id})",
        f"  policy:  {policy or '(not stated)'}",
        f"  messages: {report.total}, passed DMARC: {report.passed}, failed: {failed}",
    ]
    dispositions: Counter[str] = Counter()
    for row in report.rows:
        dispositions[row.disposition] += row.count
    if dispositions:
        lines.append("  applied: " + ", ".join(f"{k} {v}" for k, v in sorted(dispositions.items())))
    lines.append("")
    lines.append(f"  {'source IP':<40} {'count':>6}  {'dkim':<5} {'spf':<5} {'applied':<10} from")
    for row in sorted(report.rows, key=lambda r: (r.passed, -r.count)):
        mark = " " if row.passed else "!"
        detail = ", ".join([f"dkim {d}={r}" for d, r in row.dkim_domains]
                           + [f"spf {d}={r}" for d, r in row.spf_domains])
        lines.append(f"{mark} {row.source_ip:<40} {row.count:>6}  {row.dkim:<5} {row.spf:<5} "
                     f"{row.disposition:<10} {row.header_from}"
                     + (f"  [{detail}]" if detail else "")
                     + (f"  override: {', '.join(row.reasons)}" if row.reasons else ""))
    if failed:
        lines.append("")
        lines.append("  '!' marks sources whose mail failed DMARC: if they are yours, add them "
                     "to SPF or sign their mail with DKIM.")
    return "\n".join(lines) + "\n"


def summarize(message: bytes) -> str:
    return render(parse_report(message))


__all__ = ["AggregateReport", "ReportError", "ReportRow", "parse_report", "parse_xml",
           "render", "report_xml", "summarize"]
