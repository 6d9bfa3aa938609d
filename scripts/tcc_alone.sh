#!/usr/bin/env bash
# Usage: scripts/tcc_alone.sh
#
# Builds and tests crates/tcc as a service that copies it would: the crate alone in a temporary
# directory outside this workspace, with nothing inherited from the workspace's Cargo.toml. The
# workspace's Cargo.lock goes with it, so the copy builds the versions the sample is tested with
# (Cargo drops the entries it does not need). Runs `cargo test` with the default features and
# with all of them (openapi included), and `cargo doc`. The build directory is
# target/tcc-alone/, kept between runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/tcc-alone"
copy=$(mktemp -d "${TMPDIR:-/tmp}/tcc-alone.XXXXXX")
trap 'rm -rf "$copy"' EXIT

cp -R "$ROOT/crates/tcc" "$copy/tcc"
cp "$ROOT/Cargo.lock" "$copy/tcc/Cargo.lock"
cd "$copy/tcc"
echo "[tcc-alone] crates/tcc copied to $copy/tcc"
if grep -n 'workspace *= *true\|\.workspace\b' Cargo.toml; then
  echo "[tcc-alone] error: crates/tcc/Cargo.toml inherits from the workspace (lines above)" >&2
  exit 1
fi
cargo test
cargo test --all-features
RUSTDOCFLAGS=-Dwarnings cargo doc --all-features --no-deps
echo "[tcc-alone] passed: crates/tcc builds, tests and documents outside the workspace"
