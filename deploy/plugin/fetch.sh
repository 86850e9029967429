#!/usr/bin/env bash
# Prints the directory of the Claude Code plugin (github.com/agentmessaging/claude-plugin) the
# plugin test drives: the unmodified copy in tests/fixtures/claude-plugin (Apache-2.0; see its
# ORIGIN.md), vendored because CI machines reach package registries but not GitHub.
#
# Usage: deploy/plugin/fetch.sh                    # print the directory (export as AMP_PLUGIN_DIR)
#        deploy/plugin/fetch.sh --update <commit>  # replace the copy with <commit> (needs GitHub)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir="$PWD/tests/fixtures/claude-plugin"

if [ "${1:-}" = "--update" ]; then
  commit="${2:?usage: deploy/plugin/fetch.sh --update <commit>}"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  git init -q "$tmp/repo"
  git -C "$tmp/repo" fetch -q --depth 1 https://github.com/agentmessaging/claude-plugin "$commit"
  rm -rf "$dir/scripts" "$dir/.claude-plugin"
  git -C "$tmp/repo" archive FETCH_HEAD LICENSE README.md plugin.json .claude-plugin scripts |
    tar -x -C "$dir"
  sed -i "s/[0-9a-f]\{40\}/$commit/" "$dir/ORIGIN.md"
  echo "updated $dir to $commit; review the diff" >&2
fi

[ -f "$dir/scripts/amp-send.sh" ] || { echo "no plugin copy at $dir" >&2; exit 1; }
echo "$dir"
