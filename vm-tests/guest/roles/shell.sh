# SPDX-License-Identifier: Apache-2.0
# Role "shell" (sourced by /init; `rendr-vm shell`): an interactive shell on the console, for
# debugging a guest by hand. The test binaries are at their build-dir paths; `poweroff -f` leaves.
# dash, not busybox's sh: busybox would run its own reduced applets (ip) ahead of iproute2's.
say "interactive shell; build dir $(dirname "$(dirname "$RENDR_RENDRCTL")"); poweroff -f to leave"
setsid cttyhack dash -i
