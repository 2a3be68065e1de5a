#!/usr/bin/env bash
# Install (or upgrade in place) Mycelium from this checkout and start a node.
#
#   ./install.sh                      install, start a node (a personal network unless --join)
#   ./install.sh --join TOKEN         install and join the network the token invites to
#   ./install.sh --service            also install and start a systemd unit (where systemd runs)
#   ./install.sh --no-start           install only
#   ./install.sh --k3s [--k3s-binary PATH]   also run K3s (server on chosen sclerotia, agent on rhizomorphs)
#
# As root: virtualenv in /opt/mycelium, `mycelium` in /usr/local/bin, state in /var/lib/mycelium.
# Otherwise: virtualenv in $XDG_DATA_HOME/mycelium-venv, `mycelium` in ~/.local/bin, state in
# $XDG_DATA_HOME/mycelium. Re-running upgrades the package and keeps the node's identity and state.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
join_token="" service=0 start=1 prefix="" bin_dir="" state_dir="${MYCELIUM_STATE_DIR:-}" python=${PYTHON:-python3}
k3s=0 k3s_binary=""

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: error: $1" >&2; [ $# -gt 1 ] && echo "  hint: $2" >&2; exit 2; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --join) [ $# -ge 2 ] || die "--join needs a token" "ask a member for one: mycelium invite"; join_token=$2; shift 2 ;;
    --join=*) join_token=${1#--join=}; shift ;;
    --service) service=1; shift ;;
    --no-start) start=0; shift ;;
    --prefix) prefix=$2; shift 2 ;;          # where the virtualenv goes (default above)
    --bin-dir) bin_dir=$2; shift 2 ;;        # where the `mycelium` link goes
    --state-dir) state_dir=$2; shift 2 ;;
    --k3s) k3s=1; shift ;;
    --k3s-binary) [ $# -ge 2 ] || die "--k3s-binary needs a path" "e.g. --k3s-binary /usr/local/bin/k3s"; k3s=1; k3s_binary=$2; shift 2 ;;
    --k3s-binary=*) k3s=1; k3s_binary=${1#--k3s-binary=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

if [ -n "$k3s_binary" ] && ! [ -f "$k3s_binary" -a -x "$k3s_binary" ]; then
  die "--k3s-binary $k3s_binary is not an executable file" \
    "download K3s from https://github.com/k3s-io/k3s/releases (k3s for amd64, k3s-arm64 for a Pi), chmod +x it, and pass its path"
fi

# ---- Python >= 3.11 with venv ---------------------------------------------------------------
if ! command -v "$python" >/dev/null 2>&1; then
  die "python3 is not installed" "Debian/Raspberry Pi OS: sudo apt-get install python3 python3-venv"
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  die "Python >= 3.11 is required, found $("$python" --version 2>&1)" \
      "Debian 12 / Raspberry Pi OS bookworm ship 3.11: sudo apt-get install python3; or set PYTHON=/path/to/python3.11"
fi
# A dependency without a wheel for this platform is built from source, which needs these (Debian names).
# Today that is fastecdsa 2.3.2 (pinned by libp2p 0.8.1), which has no Linux wheels at all, on any CPU.
build_pkgs="build-essential python3-dev libgmp-dev"
have_build_tools() {  # a C compiler (setuptools uses $CC too), Python's headers and GMP's
  local cc=${CC:-cc}
  command -v "${cc%% *}" >/dev/null 2>&1 || return 1
  "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' || return 1
  echo '#include <gmp.h>' | $cc -E -x c - >/dev/null 2>&1
}
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }; }
is_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if is_root_with_apt; then
    say "installing python3-venv"
    apt_install python3-venv || die "apt-get could not install python3-venv" "check network access to the Debian mirror, then re-run ./install.sh"
  elif have_build_tools; then
    die "Python's venv module is missing" "sudo apt-get install python3-venv   then re-run ./install.sh"
  else  # one command for both, so a Pi without a compiler is not sent back a second time
    die "Python's venv module is missing (and there is no C compiler/Python headers/GMP, which a dependency needs on $(uname -m) if it has no wheel)" \
        "sudo apt-get install python3-venv $build_pkgs   then re-run ./install.sh"
  fi
fi

case "$(uname -m)" in
  armv6l|armv7l|armhf) echo "note: 32-bit ARM is not verified: about 16 of Mycelium's dependencies have no wheel for it on PyPI and" \
                            "would be compiled here (slowly; some need more than a C compiler). 64-bit Raspberry Pi OS is the tested path." >&2 ;;
esac

# ---- locations -----------------------------------------------------------------------------
data_home=${XDG_DATA_HOME:-$HOME/.local/share}
if [ "$(id -u)" = 0 ]; then
  prefix=${prefix:-/opt/mycelium}; bin_dir=${bin_dir:-/usr/local/bin}; state_dir=${state_dir:-/var/lib/mycelium}
else
  prefix=${prefix:-$data_home/mycelium-venv}; bin_dir=${bin_dir:-$HOME/.local/bin}; state_dir=${state_dir:-$data_home/mycelium}
fi
venv=$prefix/venv
mycelium="$venv/bin/mycelium"

# ---- virtualenv ----------------------------------------------------------------------------
fresh_venv=0
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv in $venv"
  mkdir -p "$prefix"
  "$python" -m venv "$venv"
  fresh_venv=1
fi
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
wheels=$tmp/wheels  # wheels built here from source distributions, reused by the install below

# ---- does anything need building, and can it be built? (decided before anything is installed) ---
# Only asked when build tools are missing: resolve what would be installed (nothing is), then try to
# build each dependency that comes as source only. Pure-Python ones build anyway; one that fails needs
# the tools: as root they are installed, otherwise we stop with the one command to run.
if ! have_build_tools; then
  say "no C compiler/Python headers/GMP here: checking whether a dependency must be built on $(uname -m)"
  pip install -q --dry-run --upgrade --report "$tmp/report.json" "$here" >"$tmp/resolve.log" 2>&1 \
    || { cat "$tmp/resolve.log" >&2; die "pip could not resolve mycelium's dependencies" "check network access to the package index, then re-run ./install.sh"; }
  "$venv/bin/python" - "$tmp/report.json" >"$tmp/sdists" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    info = item["download_info"]
    if "archive_info" in info and not info["url"].endswith(".whl"):  # a source distribution, not a wheel
        print(item["metadata"]["name"] + "==" + item["metadata"]["version"], info["url"])
EOF
  needs_build=""
  while read -r req url; do
    pip wheel -q --no-deps --use-pep517 --wheel-dir "$wheels" "$url" </dev/null >>"$tmp/build.log" 2>&1 || needs_build="$needs_build $req"
  done <"$tmp/sdists"
  if [ -n "$needs_build" ]; then
    if is_root_with_apt; then
      say "building${needs_build} from source (no wheel for $(uname -m)): installing $build_pkgs"
      apt_install $build_pkgs || die "apt-get could not install $build_pkgs" "check network access to the Debian mirror, then re-run ./install.sh"
      have_build_tools || die "still no working C compiler/Python headers/GMP after installing $build_pkgs" "check: ${CC:-cc} --version; ls /usr/include/gmp.h"
    else
      if [ "$fresh_venv" = 1 ]; then rm -rf "$venv"; rmdir "$prefix" 2>/dev/null || true; fi  # leave no half-made install behind
      if command -v apt-get >/dev/null; then hint="sudo apt-get install $build_pkgs   then re-run ./install.sh"
      else hint="install a C compiler, Python headers and GMP (Debian: $build_pkgs), then re-run ./install.sh"; fi
      die "${needs_build# } must be built from source on $(uname -m) (no wheel), which needs a C compiler, Python headers and GMP; nothing was installed" "$hint"
    fi
  fi
fi

# ---- stop a running node before upgrading it ------------------------------------------------
was_running=0
if [ -x "$mycelium" ] && "$mycelium" --state-dir "$state_dir" status >/dev/null 2>&1; then
  was_running=1
  say "stopping the running node to upgrade it (identity and state are kept)"
  "$mycelium" --state-dir "$state_dir" down
fi

# ---- package --------------------------------------------------------------------------------
say "installing mycelium from $here"
target="$here"; [ "$k3s" = 1 ] && target="$here[k3s]"   # the k3s extra: the kubernetes client
find_links=(); [ -d "$wheels" ] && find_links=(--find-links "$wheels")
pip install -q --upgrade "${find_links[@]}" "$target" \
  || die "pip could not install mycelium" "check network access to the package index; if a dependency failed to build: sudo apt-get install $build_pkgs; then re-run ./install.sh"
# self-upgrade's layout (mycelium/release/switch.py): `current` names the venv in use — this one
# after an install by hand; releases go to $prefix/venvs/VERSION and move the link
ln -sfn "$venv" "$prefix/current"
mkdir -p "$bin_dir"
ln -sf "$prefix/current/bin/mycelium" "$bin_dir/mycelium"

# ---- K3s: check what it needs, record the choice in config.toml ------------------------------
if [ "$k3s" = 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    for pkg in wireguard-tools:wg wireguard-go:wireguard-go iproute2:ip; do
      command -v "${pkg#*:}" >/dev/null || { say "installing ${pkg%%:*}"; apt-get install -y -q "${pkg%%:*}" >/dev/null || true; }
    done
  fi
  say "checking what K3s needs on this node"
  set +e
  "$venv/bin/python" -m mycelium.runtime.k3s.preflight --state-dir "$state_dir" --write-config \
    ${k3s_binary:+--binary "$k3s_binary"}
  preflight=$?
  set -e
  [ "$preflight" = 2 ] && die "--k3s-binary $k3s_binary is not a usable K3s binary (see above)" \
    "download K3s from https://github.com/k3s-io/k3s/releases, chmod +x it, and pass its path"
  [ "$preflight" = 0 ] || echo "note: K3s is enabled but cannot run yet (see the missing items above); services run on the process runtime meanwhile"
fi
say "installed $("$mycelium" version)  →  $bin_dir/mycelium"
case ":$PATH:" in *":$bin_dir:"*) ;; *) echo "note: $bin_dir is not on your PATH; add it, or run $bin_dir/mycelium" ;; esac

[ "$start" = 1 ] || { say "not starting (--no-start); start with: mycelium --state-dir $state_dir up --detach"; exit 0; }

# ---- start ----------------------------------------------------------------------------------
if [ "$service" = 1 ]; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if [ "$(id -u)" = 0 ]; then unit_dir=/etc/systemd/system; sctl="systemctl"; else unit_dir=$HOME/.config/systemd/user; sctl="systemctl --user"; fi
    mkdir -p "$unit_dir"
    [ -n "$join_token" ] && "$mycelium" --state-dir "$state_dir" up --detach --join "$join_token" >/dev/null && "$mycelium" --state-dir "$state_dir" down >/dev/null
    target=multi-user.target; [ "$(id -u)" = 0 ] || target=default.target
    sed -e "s|@MYCELIUM@|$prefix/current/bin/mycelium|g" -e "s|@STATE_DIR@|$state_dir|g" -e "s|multi-user.target|$target|" \
      "$here/packaging/mycelium.service" > "$unit_dir/mycelium.service"
    $sctl daemon-reload
    $sctl enable --now mycelium.service
    say "started as systemd unit mycelium.service (logs: journalctl ${sctl#systemctl} -u mycelium)"
    for _ in $(seq 1 100); do "$mycelium" --state-dir "$state_dir" status >/dev/null 2>&1 && break; sleep 0.1; done
    rm -rf "$tmp"; exec "$mycelium" --state-dir "$state_dir" status
  fi
  echo "note: systemd is not running here, so no unit was installed; starting the node detached instead"
fi
if [ -n "$join_token" ]; then
  MYCELIUM_JOIN_TOKEN=$join_token "$mycelium" --state-dir "$state_dir" up --detach
else
  "$mycelium" --state-dir "$state_dir" up --detach
fi
[ "$was_running" = 1 ] && say "node restarted after upgrade"
say "done. Try: mycelium --state-dir $state_dir status"
