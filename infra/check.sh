#!/usr/bin/env bash
# Static security checks of the Bicep templates (checkov), run in their own virtual env.
#
#   bash infra/check.sh
#
# Creates .venv-tools from requirements-tools.txt the first time (and again only when that file
# changes), then scans infra/ and exits non-zero on any failed check, any Bicep file checkov could
# not parse, or a suppression without a reason. Suppressions live inline in the .bicep files as
# `// checkov:skip=CKV_...: reason`; nothing is skipped globally.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-tools"
requirements="$repo_root/requirements-tools.txt"
stamp="$venv/.requirements-tools.sha256"

if command -v sha256sum >/dev/null; then
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
else  # macOS
  want="$(shasum -a 256 "$requirements" | cut -d' ' -f1)"
fi
if [[ ! -x "$venv/bin/python" ]]; then
  echo "check.sh: creating $venv" >&2
  python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "check.sh: installing $requirements into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

report_dir="$(mktemp -d)"
trap 'rm -rf "$report_dir"' EXIT

cd "$repo_root"
status=0
# No network: no policy download, no PyPI version check.
CKV_SKIP_PACKAGE_UPDATE_CHECK=true "$venv/bin/checkov" \
  --framework bicep -d infra --skip-download --quiet --compact \
  -o cli -o json --output-file-path "$report_dir" >/dev/null || status=$?
cat "$report_dir/results_cli.txt" 2>/dev/null || true

# Every inline suppression must say why: `// checkov:skip=CKV_ID: reason`.
if bare="$(grep -rnE --include='*.bicep' 'checkov:skip=[A-Za-z0-9_,-]+ *(:[[:space:]]*)?$' infra)"; then
  echo "check.sh: FAILED: checkov suppression without a reason:" >&2
  echo "$bare" >&2
  exit 1
fi

# Checkov's exit code covers failed checks; also refuse parse errors and empty scans.
"$venv/bin/python" - "$report_dir/results_json.json" "$status" <<'PY'
import json
import sys

path, status = sys.argv[1], int(sys.argv[2])
try:
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
except (OSError, ValueError) as error:
    sys.exit(f"check.sh: no checkov report ({error}); checkov exit code {status}")
summary = report.get("summary", {})
problems = []
if status != 0 or summary.get("failed", 0):
    problems.append(f"{summary.get('failed', '?')} failed check(s) (checkov exit code {status})")
if summary.get("parsing_errors", 0):
    problems.append(f"{summary['parsing_errors']} Bicep file(s) checkov could not parse")
if not summary.get("passed", 0):
    problems.append("no check passed: were the templates scanned at all?")
print(
    f"check.sh: passed {summary.get('passed', 0)}, failed {summary.get('failed', 0)}, "
    f"skipped {summary.get('skipped', 0)}, parsing errors {summary.get('parsing_errors', 0)}"
)
if problems:
    sys.exit("check.sh: FAILED: " + "; ".join(problems))
PY
