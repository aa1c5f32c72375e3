# shellcheck shell=bash
# Sourced by scripts/* and .ci/run: where the repository is, logging, and `uv`.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Makes `uv` callable in this shell if it is installed: on PATH, in the user's pip
# scripts directory (not on PATH on a fresh machine), or as `python3 -m uv`.
# Returns 1 when it is not installed at all.
find_uv() {
    if command -v uv >/dev/null 2>&1; then
        return 0
    fi
    local user_bin
    user_bin="$(python3 -c 'import site, os; print(os.path.join(site.getuserbase(), "bin"))' 2>/dev/null || true)"
    if [[ -n "$user_bin" && -x "$user_bin/uv" ]]; then
        export PATH="$user_bin:$PATH"
        return 0
    fi
    if python3 -m uv --version >/dev/null 2>&1; then
        uv() { python3 -m uv "$@"; }
        return 0
    fi
    return 1
}

# Like find_uv, for scripts that run after scripts/setup (which installs it).
require_uv() {
    find_uv || die "uv is not installed: run scripts/setup"
}
