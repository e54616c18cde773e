"""The Public Suffix List, offline (data/public_suffix_list.dat, see data/README.md), and the
organizational domain of RFC 7489 §3.2 that DMARC alignment and policy discovery use.

The algorithm is the list's own (https://publicsuffix.org/list/): the longest matching rule
wins, an exception rule (``!``) beats every other, ``*`` matches one label, and a name no rule
matches has its last label as public suffix. ICANN and private sections are both used, as
DMARC implementations (OpenDMARC, Mox) do."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources


def _alabel(label: str) -> str:
    """Compare labels in A-label form, so a U-label and its punycode match the same rule."""
    if label.isascii():
        return label
    try:
        return label.encode("idna").decode("ascii")
    except UnicodeError:
        return label


@dataclass(frozen=True, slots=True)
class SuffixList:
    exact: frozenset[str]
    wildcard: frozenset[str]  # "*.ck" stored as "ck"
    exception: frozenset[str]  # "!www.ck" stored as "www.ck"

    @classmethod
    def parse(cls, text: str) -> SuffixList:
        exact: set[str] = set()
        wildcard: set[str] = set()
        exception: set[str] = set()
        for line in text.splitlines():
            rule = line.split(None, 1)[0] if line.strip() else ""
            if not rule or rule.startswith("//"):
                continue
            rule = ".".join(_alabel(label) for label in rule.lower().split("."))
            if rule.startswith("!"):
                exception.add(rule[1:])
            elif rule.startswith("*."):
                wildcard.add(rule[2:])
            else:
                exact.add(rule)
        return cls(frozenset(exact), frozenset(wildcard), frozenset(exception))

    def _suffix_labels(self, labels: list[str]) -> int:
        """How many rightmost labels of ``labels`` (A-labels, lower case) are the suffix."""
        n = len(labels)
        for i in range(n):  # longest candidate first
            if ".".join(labels[i:]) in self.exception:
                return n - i - 1
        best = 1  # the implicit "*" rule
        for i in range(n):
            name = ".".join(labels[i:])
            if name in self.exact:
                best = max(best, n - i)
            if i > 0 and name in self.wildcard:
                best = max(best, n - i + 1)
        return best

    def public_suffix(self, domain: str) -> str | None:
        labels = _labels(domain)
        if labels is None:
            return None
        k = self._suffix_labels([_alabel(label) for label in labels])
        return ".".join(labels[-k:])

    def registrable_domain(self, domain: str) -> str | None:
        """The public suffix plus one label; None for a suffix itself or a malformed name."""
        labels = _labels(domain)
        if labels is None:
            return None
        k = self._suffix_labels([_alabel(label) for label in labels])
        if len(labels) <= k:
            return None
        return ".".join(labels[-k - 1 :])

    def organizational_domain(self, domain: str) -> str:
        """RFC 7489 §3.2; a name that is itself a public suffix is its own."""
        name = domain.rstrip(".").lower()
        return self.registrable_domain(name) or name


def _labels(domain: str) -> list[str] | None:
    name = domain.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or name.startswith("."):
        return None
    labels = name.split(".")
    if any(not label for label in labels):
        return None
    return labels


@functools.cache
def default_list() -> SuffixList:
    """The vendored list, parsed once per process (about 10k rules)."""
    data = resources.files("postmesh.common.mailauth").joinpath("data/public_suffix_list.dat")
    return SuffixList.parse(data.read_text(encoding="utf-8"))


def organizational_domain(domain: str) -> str:
    return default_list().organizational_domain(domain)
