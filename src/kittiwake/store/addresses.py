"""Address folding for the directory, and the mapping from addresses to Maildir paths.

Callers hand the store plain `local@domain` strings.  We fold both halves to lower case before
storing or comparing: RFC 5321 §2.4 says local parts are case-sensitive, but every deployed
server folds them, and users expect `Bob@` and `bob@` to be one mailbox.  Remote alias targets
are the exception: their local part belongs to someone else, so only the domain is folded.

Path components are derived from the folded address with an injective escape (`%XX`, and `%`
itself is escaped), so a local part such as `../x` or `a/b` — legal atext — can never climb out
of `<data>/mail/<domain>/`.
"""

from __future__ import annotations

from pathlib import Path

from kittiwake.store.errors import InvalidAddress

_SAFE_PUNCT = frozenset("-_+=.")


def fold_domain(domain: str) -> str:
    """Lower-case a domain, drop a trailing root dot, and show IDNA A-labels as U-labels.

    The U-label form matches `kittiwake.address.Address.domain`, so `xn--bcher-kva.example`
    and `bücher.example` are one domain in the directory.
    """
    domain = domain.strip().rstrip(".").lower()
    if not domain or any(c.isspace() or c in "@/\\" or ord(c) < 32 for c in domain):
        raise InvalidAddress(f"bad domain {domain!r}")
    if domain.startswith("["):  # address literal, RFC 5321 §4.1.3: keep as given
        return domain
    labels = []
    for label in domain.split("."):
        if not label:
            raise InvalidAddress(f"empty label in domain {domain!r}")
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna").lower()
            except UnicodeError:
                pass  # not valid punycode: keep it as an opaque label
        labels.append(label)
    return ".".join(labels)


def split(address: str) -> tuple[str, str]:
    """`local@domain` → (local, domain), splitting at the last `@` (a quoted local part may
    contain `@`); the local part may be empty only for the catch-all form `@domain`."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not domain:
        raise InvalidAddress(f"not local@domain: {address!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in local):
        raise InvalidAddress(f"control character in local part: {address!r}")
    return local, fold_domain(domain)


def fold(address: str) -> str:
    """The directory key for a local address: both halves lower-cased."""
    local, domain = split(address)
    if not local:
        raise InvalidAddress(f"empty local part: {address!r}")
    return f"{local.lower()}@{domain}"


def fold_source(source: str) -> str:
    """An alias source: `local@domain`, or `@domain` for the catch-all."""
    local, domain = split(source)
    return f"{local.lower()}@{domain}"


def fold_remote(address: str) -> str:
    """A remote address: only the domain is ours to fold."""
    local, domain = split(address)
    if not local:
        raise InvalidAddress(f"empty local part: {address!r}")
    return f"{local}@{domain}"


def path_component(text: str) -> str:
    """Escape `text` into one safe, reversible file-name component.

    Letters and digits (including non-ASCII ones: Maildir users may browse these trees) and
    `-_+=.` pass through; everything else, `%`, and a leading dot (hidden files, `.`/`..`, and
    Maildir++ folder names all start with one) become `%XX` per UTF-8 byte.
    """
    out = []
    for i, ch in enumerate(text):
        if (ch.isalnum() or ch in _SAFE_PUNCT) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def account_dir(mail_root: Path, address: str) -> Path:
    """`<data>/mail/<domain>/<user>/` for a folded account address."""
    local, domain = split(address)
    return mail_root / path_component(domain) / path_component(local)
