"""The `kittiwake` command (DESIGN.md, "The command").

Subcommands: init, serve, check-config, domain, user, alias. Configuration comes from
`--config PATH`, else `KITTIWAKE_CONFIG`, else the development default (./kittiwake-data,
domain localhost, loopback ports 2525/2587/2465).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from pathlib import Path

from kittiwake import __version__, app, config, dnsrecords, log, sendmail
from kittiwake.config import Config, ConfigError
from kittiwake.dns import DnsSettings
from kittiwake.mailauth import KeyAlgorithm
from kittiwake.mailauth.dmarcreport import summarize as summarize_report
from kittiwake.queue.models import QueuedRecipientSpec, QueueSummary
from kittiwake.queue.spool import Spool
from kittiwake.store.directory import Directory
from kittiwake.store.errors import StoreError
from kittiwake.store.mailstore import MailStore
from kittiwake.store.models import StoreSettings

INIT_TEMPLATE = """\
# Kittiwake configuration, written by `kittiwake init`. Every key: docs/configuration.md.

[server]
# The name this server gives itself in the SMTP greeting, EHLO and Received headers.
# It should resolve to this server and match its reverse DNS (PTR) record.
hostname = "{hostname}"
# Mail, the index, the queue, TLS and DKIM keys live here (relative to this file).
data_dir = "kittiwake-data"
# fsync every message before answering 250. Never turn this off in production.
fsync = true
# Worker processes sharing the listening ports (SO_REUSEPORT).
workers = 1

[tls]
# PEM files, relative to this file. `init` made a self-signed pair; replace it with a
# certificate for the hostname (e.g. from an ACME client) and restart.
cert = "kittiwake-data/tls/cert.pem"
key = "kittiwake-data/tls/key.pem"

[limits]
max_message_size = 26214400      # bytes; advertised in EHLO SIZE
max_recipients = 100             # per message
max_connections = 20000          # all listeners together
max_connections_per_ip = 50
command_timeout = 300.0          # seconds (RFC 5321 §4.5.3.2)
data_timeout = 600.0
reject_bare_line_endings = true  # refuse bare CR/LF in DATA (SMTP smuggling)

[log]
level = "info"

# Port 25: mail from other servers for your domains.
[[listener]]
kind = "smtp"
address = "{bind}:25"

# Port 587: your users' mail clients (STARTTLS + AUTH).
[[listener]]
kind = "submission"
address = "{bind}:587"

# Port 465: your users' mail clients over implicit TLS (RFC 8314).
[[listener]]
kind = "submissions"
address = "{bind}:465"

# IMAP with STARTTLS (143) and over implicit TLS (993).
[[listener]]
kind = "imap"
address = "{bind}:143"

[[listener]]
kind = "imaps"
address = "{bind}:993"

# POP3 with STLS (110) and over implicit TLS (995).
[[listener]]
kind = "pop3"
address = "{bind}:110"

[[listener]]
kind = "pop3s"
address = "{bind}:995"
"""


def _load(args: argparse.Namespace) -> Config:
    return config.resolve(args.config)


def _directory(cfg: Config) -> Directory:
    app.prepare_data_dir(cfg)
    return Directory(cfg.db_path)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("kittiwake: passwords do not match")
    if len(password) < 8:
        raise SystemExit("kittiwake: password must have at least 8 characters")
    return password


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    path = target / "kittiwake.toml"
    if path.exists() and not args.force:
        raise SystemExit(f"kittiwake: {path} exists (use --force to overwrite)")
    path.write_text(INIT_TEMPLATE.format(hostname=args.hostname.lower(), bind=args.bind))
    cfg = config.load(path)
    d = _directory(cfg)
    try:
        if not d.is_local_domain(args.domain):
            d.add_domain(args.domain)
    finally:
        d.close()
    app.ensure_dkim_keys(cfg, args.domain)
    print(f"Wrote {path} and the data directory {cfg.data_dir}.")
    print(f"Created the domain {args.domain}, its DKIM keys (RSA + Ed25519) and a "
          f"self-signed certificate for {cfg.hostname}.\n")
    print("Next steps:")
    print(f"  1. Add a mailbox:   kittiwake --config {path} user add postmaster@{args.domain}")
    print(f"  2. Start:           kittiwake --config {path} serve")
    print("  3. Publish these DNS records (then check: "
          f"kittiwake --config {path} dns {args.domain} --check):")
    for line in dnsrecords.zone_text(_records(cfg, args.domain)).splitlines():
        print(f"       {line}")
    print("  4. Replace the self-signed certificate with a real one for "
          f"{cfg.hostname} (see [tls] in the config).")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = _load(args)
    log.setup(cfg.log_level)
    app.prepare_data_dir(cfg)
    if cfg.source is None:
        password = app.bootstrap_development(cfg)
        if password is not None:
            print(f"development default: created postmaster@{cfg.hostname} "
                  f"with password {password}", file=sys.stderr)
    return app.serve(cfg)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(f"config OK: {cfg.source or 'development default'}")
    print(f"hostname={cfg.hostname} data_dir={cfg.data_dir}")
    for lc in cfg.listeners:
        print(f"listener kind={lc.kind} address={lc.host}:{lc.port} tls={lc.tls}")
    missing = [p for p in (cfg.tls_cert, cfg.tls_key) if not p.exists()]
    for p in missing:
        print(f"warning: TLS file missing (a self-signed one is made at start): {p}")
    return 0


def cmd_domain(args: argparse.Namespace) -> int:
    cfg = _load(args)
    d = _directory(cfg)
    try:
        if args.action == "add":
            d.add_domain(args.name)
            if app.ensure_dkim_keys(cfg, args.name):
                print(f"created DKIM keys for {args.name}; publish the records shown by "
                      f"`kittiwake dns {args.name}`")
        elif args.action == "del":
            d.del_domain(args.name, force=args.force)
        else:
            for name in d.list_domains():
                print(name)
    finally:
        d.close()
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    d = _directory(_load(args))
    try:
        if args.action == "add":
            d.add_account(args.address, _read_password(args))
        elif args.action == "passwd":
            d.set_password(args.address, _read_password(args))
        elif args.action == "del":
            d.del_account(args.address, purge=args.purge)
        else:
            for account in d.list_accounts(args.domain):
                print(account.address)
    finally:
        d.close()
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    d = _directory(_load(args))
    try:
        if args.action == "add":
            d.add_alias(args.source, args.targets)
        elif args.action == "del":
            d.del_alias(args.source, args.target)
        else:
            for alias in d.list_aliases(args.domain):
                for target in alias.targets:
                    print(f"{alias.source} -> {target}")
    finally:
        d.close()
    return 0


def _spool(cfg: Config) -> Spool:
    app.prepare_data_dir(cfg)
    return Spool(cfg.data_dir, fsync=cfg.fsync)


def _print_summary(summary: QueueSummary, *, verbose: bool) -> None:
    m = summary.message
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.arrival))
    print(f"{m.queue_id}  {m.size:>9}  {when}  <{m.sender}>  origin={m.origin}")
    for r in summary.recipients:
        line = f"    {r.state.value:9} <{r.recipient}> attempts={r.attempts}"
        if r.state.value == "queued":
            line += " next=" + time.strftime("%H:%M:%S", time.localtime(r.next_attempt))
        if r.last_reply is not None:
            text = " ".join(r.last_reply.lines)
            line += f" last=\"{r.last_reply.code} {r.last_reply.enhanced} {text}\""
        if verbose and r.last_host:
            line += f" host={r.last_host}"
        print(line)


def cmd_queue(args: argparse.Namespace) -> int:
    spool = _spool(_load(args))
    try:
        if args.action == "list":
            items = spool.list_queue()
            for summary in items:
                _print_summary(summary, verbose=False)
            print(f"-- {len(items)} message(s) in the queue")
        elif args.action == "show":
            found = spool.show(args.id)
            if found is None:
                raise SystemExit(f"kittiwake: no message {args.id} in the queue")
            _print_summary(found, verbose=True)
            if args.content:
                sys.stdout.write(spool.read_message(args.id).decode("utf-8", "replace"))
        elif args.action in ("retry", "flush"):
            n = spool.retry(getattr(args, "id", None), time.time())
            print(f"{n} recipient(s) scheduled for immediate delivery "
                  "(the running server picks them up within its poll interval)")
        elif args.action == "delete":
            if not spool.delete(args.id):
                raise SystemExit(f"kittiwake: no message {args.id} in the queue")
            print(f"deleted {args.id}")
    finally:
        spool.close()
    return 0


def cmd_sendmail(args: argparse.Namespace) -> int:
    cfg = _load(args)
    data = sys.stdin.buffer.read(cfg.limits.max_message_size + 1)
    if len(data) > cfg.limits.max_message_size:
        raise SystemExit("kittiwake sendmail: message exceeds limits.max_message_size")
    user = getpass.getuser()
    sender = args.f if args.f is not None else f"{user}@{cfg.hostname}"
    try:
        prepared = sendmail.prepare(
            data, sender=sender, recipients=args.recipients, extract=args.t,
            ignore_dots=args.i or args.oi, full_name=args.F, hostname=cfg.hostname)
    except ValueError as e:
        raise SystemExit(f"kittiwake sendmail: {e}") from None
    spool = _spool(cfg)
    try:
        queue_id = f"S{time.time_ns():x}"
        spool.enqueue(queue_id, prepared.content, prepared.sender,
                      [QueuedRecipientSpec(r) for r in prepared.recipients],
                      smtputf8=prepared.smtputf8, eight_bit=prepared.eight_bit,
                      origin="sendmail", auth_user=user, now=time.time())
    finally:
        spool.close()
    return 0


def _records(cfg: Config, domain: str) -> list[dnsrecords.Record]:
    keystore = app.dkim_keystore(cfg)
    return dnsrecords.records_for(
        domain, cfg.hostname, cfg.mailauth.public_addresses, keystore.dns_records(domain),
        cfg.mailauth.report_address or None)


def cmd_dns(args: argparse.Namespace) -> int:
    cfg = _load(args)
    records = _records(cfg, args.domain)
    if not args.check:
        print(f"; DNS records for {args.domain} served by {cfg.hostname} (zone-file lines)")
        print(dnsrecords.zone_text(records), end="")
        if not cfg.mailauth.public_addresses:
            print("; set mailauth.public_addresses to get A/AAAA records and ip4:/ip6: in SPF")
        return 0
    resolver = dnsrecords.DnsRecordResolver(DnsSettings(
        nameservers=cfg.dns.nameservers, port=cfg.dns.port, timeout=cfg.dns.timeout))
    results = asyncio.run(dnsrecords.check(records, resolver))
    for result in results:
        print(("ok      " if result.ok else "PROBLEM ") + result.message)
    bad = sum(not r.ok for r in results)
    print(f"-- {len(results) - bad} of {len(results)} records as expected")
    return 1 if bad else 0


def cmd_dkim(args: argparse.Namespace) -> int:
    cfg = _load(args)
    app.prepare_data_dir(cfg)
    store = app.dkim_keystore(cfg)
    if args.action == "keygen":
        key = store.generate(args.domain, KeyAlgorithm(args.algorithm), args.selector,
                             activate=True if args.activate else None)
        state = "active" if key in store.active_keys(args.domain) else \
            "not active yet: publish the record, then `kittiwake dkim activate`"
        print(f"; {key.algorithm.value} key {key.selector} for {key.domain} ({state})")
        print(dnsrecords.Record(key.record_name, "TXT", key.txt_record, "DKIM", "dkim").zone_line())
    elif args.action == "activate":
        key = store.activate(args.domain, args.selector)
        print(f"signing {args.domain} with {key.selector} ({key.algorithm.value}) from now on")
    else:
        active = set(store.active_keys(args.domain))
        for key in store.keys(args.domain):
            print(f"{key.selector:24} {key.algorithm.value:8} {'active' if key in active else ''}")
    return 0


def cmd_dmarc(args: argparse.Namespace) -> int:
    if args.account:
        return _dmarc_mailbox(_load(args), args.account)
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    print(summarize_report(data), end="")
    return 0


def _dmarc_mailbox(cfg: Config, account: str) -> int:
    """Summarise every aggregate report delivered to `account` (the rua address)."""

    async def read_all() -> list[bytes]:
        store = MailStore(StoreSettings(data_dir=cfg.data_dir, fsync=cfg.fsync))
        await store.start()
        try:
            rows = await store.list_messages(account)
            return [await store.read_message(account, "INBOX", r.uid) for r in rows]
        finally:
            await store.close()

    found = 0
    for message in asyncio.run(read_all()):
        try:
            text = summarize_report(message)
        except ValueError:
            continue  # not an aggregate report
        found += 1
        print(text)
    print(f"-- {found} DMARC aggregate report(s) in {account}'s INBOX")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kittiwake", description="Kittiwake mail server")
    p.add_argument("--config", help="config file (default: $KITTIWAKE_CONFIG, else the "
                   "development default in ./kittiwake-data)")
    p.add_argument("--version", action="version", version=f"kittiwake {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="write a config, data dir and self-signed certificate")
    s.add_argument("--domain", required=True, help="the first mail domain, e.g. example.org")
    s.add_argument("--hostname", required=True, help="this server's name, e.g. mail.example.org")
    s.add_argument("--dir", default=".", help="where to write kittiwake.toml (default: .)")
    s.add_argument("--bind", default="0.0.0.0", help="listen address (default: 0.0.0.0)")
    s.add_argument("--force", action="store_true", help="overwrite an existing config")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("serve", help="run every configured listener")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check-config", help="validate the configuration and print it")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("domain", help="manage local mail domains")
    dsub = s.add_subparsers(dest="action", required=True)
    x = dsub.add_parser("add", help="add a domain")
    x.add_argument("name")
    x = dsub.add_parser("del", help="delete a domain")
    x.add_argument("name")
    x.add_argument("--force", action="store_true", help="also when it still has accounts")
    dsub.add_parser("list", help="list domains")
    s.set_defaults(func=cmd_domain)

    s = sub.add_parser("user", help="manage accounts (mailboxes)")
    usub = s.add_subparsers(dest="action", required=True)
    for name, helptext in (("add", "add an account"), ("passwd", "change a password")):
        x = usub.add_parser(name, help=helptext)
        x.add_argument("address")
        x.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin")
    x = usub.add_parser("del", help="delete an account")
    x.add_argument("address")
    x.add_argument("--purge", action="store_true", help="also delete its mail")
    x = usub.add_parser("list", help="list accounts")
    x.add_argument("domain", nargs="?")
    s.set_defaults(func=cmd_user)

    s = sub.add_parser("alias", help="manage aliases (@domain = catch-all)")
    asub = s.add_subparsers(dest="action", required=True)
    x = asub.add_parser("add", help="add an alias to one or more addresses")
    x.add_argument("source", help="alias@domain, or @domain for a catch-all")
    x.add_argument("targets", nargs="+", help="local or remote addresses")
    x = asub.add_parser("del", help="delete an alias (or one of its targets)")
    x.add_argument("source")
    x.add_argument("target", nargs="?")
    x = asub.add_parser("list", help="list aliases")
    x.add_argument("domain", nargs="?")
    s.set_defaults(func=cmd_alias)

    s = sub.add_parser("queue", help="inspect and manage the outbound queue")
    qsub = s.add_subparsers(dest="action", required=True)
    qsub.add_parser("list", help="list queued messages and their recipients")
    x = qsub.add_parser("show", help="show one message's recipients (and --content)")
    x.add_argument("id")
    x.add_argument("--content", action="store_true", help="also print the message")
    x = qsub.add_parser("retry", help="retry one message now (or all without an id)")
    x.add_argument("id", nargs="?")
    x = qsub.add_parser("delete", help="remove a message from the queue without a bounce")
    x.add_argument("id")
    qsub.add_parser("flush", help="retry every queued message now")
    s.set_defaults(func=cmd_queue)

    s = sub.add_parser(
        "sendmail", help="queue a message from stdin, like sendmail(8)",
        description="sendmail-compatible entry point for scripts and cron: the message is "
        "read from stdin and queued for delivery.")
    s.add_argument("-t", action="store_true", help="take recipients from To/Cc/Bcc (Bcc is removed)")
    s.add_argument("-i", action="store_true", help="a line with a single '.' does not end the message")
    s.add_argument("-oi", action="store_true", help="same as -i")
    s.add_argument("-f", metavar="FROM", help="envelope sender (default: user@hostname)")
    s.add_argument("-F", metavar="NAME", help="full name for a From: header that is added")
    s.add_argument("-o", metavar="OPTION", action="append", help="ignored (sendmail compatibility)")
    s.add_argument("recipients", nargs="*", help="recipient addresses")
    s.set_defaults(func=cmd_sendmail)

    s = sub.add_parser("dns", help="print (or --check) the DNS records a domain needs")
    s.add_argument("domain")
    s.add_argument("--check", action="store_true",
                   help="compare with what DNS serves now and name what is missing or wrong")
    s.set_defaults(func=cmd_dns)

    s = sub.add_parser("dkim", help="DKIM signing keys")
    ksub = s.add_subparsers(dest="action", required=True)
    x = ksub.add_parser("keygen", help="create a key and print its TXT record")
    x.add_argument("domain")
    x.add_argument("--selector", help="selector name (default: algorithm + date)")
    x.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    x.add_argument("--activate", action="store_true",
                   help="sign with it at once (default only for a domain's first key)")
    x = ksub.add_parser("activate", help="switch signing to a published selector (rotation)")
    x.add_argument("domain")
    x.add_argument("selector")
    x = ksub.add_parser("list", help="list a domain's keys")
    x.add_argument("domain")
    s.set_defaults(func=cmd_dkim)

    s = sub.add_parser("dmarc", help="DMARC aggregate reports")
    dsub2 = s.add_subparsers(dest="action", required=True)
    x = dsub2.add_parser("report", help="summarise a received aggregate report (message, "
                         "XML, .gz or .zip)")
    x.add_argument("file", nargs="?", default="-", help="file, or - for stdin (default)")
    x.add_argument("--account", help="summarise every report in this account's INBOX instead")
    s.set_defaults(func=cmd_dmarc)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"kittiwake: configuration error: {e}", file=sys.stderr)
        return 2
    except (StoreError, ValueError, LookupError) as e:
        print(f"kittiwake: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
