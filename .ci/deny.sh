#!/usr/bin/env bash
# Checks the dependency tree against deny.toml (licenses, banned version requirements,
# sources) without the network. Installs cargo-deny first when it is missing.
# Advisories are not checked here: they need the advisory database from the network.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny
fi
cargo deny --version
# Duplicate versions are warnings; their inclusion graphs would bury the verdict.
cargo deny --offline check --hide-inclusion-graph licenses bans sources
