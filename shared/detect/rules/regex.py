"""Rule regular expressions on RE2: matching time grows linearly with the text, whatever the pattern.

A `|re` value runs over fields a sender controls (a user agent, a request body). Python's `re`
backtracks, so `^(a+)+$` over 35 characters outlasts the function timeout and stalls the partition;
RE2 (google-re2) never backtracks. What RE2 cannot do, a rule cannot use: backreferences (`\\1`,
`(?P=name)`), lookahead and lookbehind (`(?=`, `(?!`, `(?<=`, `(?<!`), atomic groups and possessive
quantifiers, conditionals (`(?(1)a|b)`) and `\\Z` (write `\\z` or `$`). Such a pattern is a load error of
its rule, with RE2's reason.
"""

from __future__ import annotations

from typing import Protocol, cast

import re2

from shared.detect.rules.errors import RuleError


class Matcher(Protocol):
    """The part of a compiled RE2 pattern rules use."""

    def search(self, text: str) -> object | None: ...

    def fullmatch(self, text: str) -> object | None: ...


def rule_regex(pattern: str, *, ignore_case: bool = False, dot_all: bool = False) -> Matcher:
    """Compile with RE2; RuleError (the rule's load error) when RE2 cannot run the pattern."""
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.dot_nl = dot_all
    options.log_errors = False  # the reason goes into the RuleError, not to stderr
    try:
        return cast(Matcher, re2.compile(pattern, options))
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        raise RuleError(f"invalid regular expression for RE2 (rules run in linear time: no backreferences, "
                        f"lookaround or other backtracking features): {reason}") from None
