#!/usr/bin/env bash
# Bazel's workspace status for the custom Envoy (replaces Envoy's bazel/get_workspace_status,
# which reads Envoy's own git checkout): the version Envoy reports is the pinned Envoy commit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rev=$("$here/pin.sh" ENVOY_COMMIT)
echo "BUILD_SCM_REVISION $rev"
echo "ENVOY_BUILD_SCM_REVISION $rev"
echo "STABLE_BUILD_SCM_REVISION $rev"
echo "BUILD_SCM_STATUS envoy-qat"
