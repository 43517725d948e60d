#!/usr/bin/env bash
echo "demo: not wired up yet (needs the transport and the guest harness)" >&2
exit 1
