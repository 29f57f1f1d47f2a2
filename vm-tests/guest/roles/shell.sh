# SPDX-License-Identifier: Apache-2.0
# Role "shell" (sourced by /init; `rendr-vm shell`): an interactive shell on the console, for
# debugging a guest by hand. The test binaries are at their build-dir paths; `poweroff -f` leaves.
say "interactive shell; test binaries under $(dirname "$RENDR_RENDRCTL")/.. ; poweroff -f to leave"
setsid cttyhack sh
