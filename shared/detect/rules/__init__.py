"""Detection rules as data: YAML files in Sigma's detection syntax, loaded, matched and aggregated.

`loader` reads a rules folder (one rule per file, lists under `lists/`), `sigma` compiles selections
and conditions to predicates, `aggregate` holds the pure state transitions of stateful rules.
"""

from shared.detect.rules.errors import LoadError, RuleError
from shared.detect.rules.loader import RulePack, load_rules
from shared.detect.rules.rule import Rule, RuleCase, state_key

__all__ = ["LoadError", "Rule", "RuleCase", "RuleError", "RulePack", "load_rules", "state_key"]
