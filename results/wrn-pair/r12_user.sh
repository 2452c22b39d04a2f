#!/usr/bin/env bash
# r12_user.sh TEACHER OUT [SEED] : the defaults exactly as a user runs them (no options) --
# pipeline_arm.sh with no arm arguments. (Session 26's R12 runs used this script's earlier body,
# the same two commands with --source transfer:OUT/set.)
exec "$(dirname "$0")/pipeline_arm.sh" "$1" "$2" "${3:-0}"
