"""DMARC aggregate reports (RFC 7489 appendix C): extraction, defused parsing, summary."""

from __future__ import annotations

import gzip
import io
import zipfile
from email.message import EmailMessage

import pytest

from kittiwake.mailauth.dmarcreport import (
    MAX_XML,
    ReportError,
    parse_report,
    parse_xml,
    render,
    summarize,
)

# The shape of RFC 7489 appendix C, with two records.
REPORT = b"""<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>receiver.example</org_name>
    <email>noreply-dmarc@receiver.example</email>
    <report_id>9391651994964116463</report_id>
    <date_range><begin>1704067200</begin><end>1704153599</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>a.test</domain><adkim>r</adkim><aspf>r</aspf>
    <p>quarantine</p><sp>none</sp><pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.1</source_ip><count>12</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>a.test</header_from></identifiers>
    <auth_results>
      <dkim><domain>a.test</domain><result>pass</result><selector>rsa1</selector></dkim>
      <spf><domain>a.test</domain><result>pass</result></spf>
    </auth_results>
  </record>
  <record>
    <row>
      <source_ip>203.0.113.66</source_ip><count>3</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim>
        <spf>fail</spf><reason><type>forwarded</type></reason></policy_evaluated>
    </row>
    <identifiers><header_from>a.test</header_from><envelope_from>evil.test</envelope_from>
    </identifiers>
    <auth_results><spf><domain>evil.test</domain><result>softfail</result></spf></auth_results>
  </record>
</feedback>
"""


def report_message(payload: bytes, ctype: str, filename: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "noreply-dmarc@receiver.example"
    msg["To"] = "dmarc@a.test"
    msg["Subject"] = "Report Domain: a.test Submitter: receiver.example"
    msg.set_content("This is an aggregate report.")
    maintype, subtype = ctype.split("/")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zipped(data: bytes, name: str = "receiver.example!a.test!1704067200!1704153599.xml"
           ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(("payload", "ctype", "filename"), [
    (gzip.compress(REPORT), "application/gzip", "r.xml.gz"),
    (zipped(REPORT), "application/zip", "r.zip"),
    (zipped(REPORT), "application/octet-stream", "r.zip"),
    (REPORT, "text/xml", "r.xml"),
])
def test_report_attachments(payload: bytes, ctype: str, filename: str) -> None:
    report = parse_report(report_message(payload, ctype, filename))
    assert (report.org_name, report.domain, report.report_id) == (
        "receiver.example", "a.test", "9391651994964116463")
    assert (report.total, report.passed) == (15, 12)
    assert report.policy["p"] == "quarantine"
    assert report.begin.isoformat() == "2024-01-01T00:00:00+00:00"
    bad = report.rows[1]
    assert (bad.source_ip, bad.count, bad.disposition, bad.passed) == (
        "203.0.113.66", 3, "quarantine", False)
    assert bad.spf_domains == (("evil.test", "softfail"),)
    assert bad.reasons == ("forwarded",)


def test_bare_payloads() -> None:
    assert parse_report(gzip.compress(REPORT)).total == 15
    assert parse_report(REPORT).total == 15


def test_render_summary() -> None:
    text = render(parse_report(REPORT))
    assert "DMARC aggregate report for a.test from receiver.example" in text
    assert "messages: 15, passed DMARC: 12, failed: 3" in text
    assert "applied: none 12, quarantine 3" in text
    failing = next(line for line in text.splitlines() if "203.0.113.66" in line)
    assert failing.startswith("!") and "spf evil.test=softfail" in failing
    assert "override: forwarded" in failing
    assert summarize(REPORT) == text


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>
<feedback>&lol2;</feedback>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><feedback>&x;</feedback>"""
UTF16_DTD = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY a "b">]><feedback/>'


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, XXE, UTF16_DTD.encode("utf-16"),
                                 b'<!DOCTYPE feedback SYSTEM "http://x.test/d.dtd"><feedback/>'])
def test_dtds_and_entities_are_refused(xml: bytes) -> None:
    with pytest.raises(ReportError, match="DTD or entities"):
        parse_xml(xml)


def test_decompression_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"<feedback>" + b" " * (MAX_XML + 10) + b"</feedback>")
    assert len(bomb) < 100_000
    with pytest.raises(ReportError, match="too large"):
        parse_report(report_message(bomb, "application/gzip", "r.xml.gz"))
    with pytest.raises(ReportError, match="too large"):
        parse_report(zipped(b" " * (MAX_XML + 10)))


@pytest.mark.parametrize("data", [
    b"From: a@b\r\nSubject: no attachment\r\n\r\nhello\r\n",
    report_message(b"\x1f\x8bnot really gzip", "application/gzip", "r.xml.gz"),
    report_message(b"<html/>", "text/xml", "r.xml"),
    report_message(zipped(REPORT, "readme.txt"), "application/zip", "r.zip"),
    b"<feedback><unclosed></feedback>",
])
def test_unreadable_reports(data: bytes) -> None:
    with pytest.raises(ReportError):
        parse_report(data)


def test_namespaced_report_is_read() -> None:
    xml = REPORT.replace(b"<feedback>", b'<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">')
    assert parse_report(xml).total == 15
