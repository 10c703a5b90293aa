#!/usr/bin/env bash
# Regenerates the expected compiler output of the #[job] UI tests
# (jobqueue/tests/ui/fail/*.stderr). Review the diff before committing:
# these files are the macro's error messages, part of its API.
set -euo pipefail
cd "$(dirname "$0")/.."
TRYBUILD=overwrite cargo test -p jobqueue --test ui
git --no-pager diff --stat -- jobqueue/tests/ui
