#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian 12 machine, and nothing when it is
# all there already. Idempotent; run as root (CI and the developer machines are root).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have mksquashfs          || need+=(squashfs-tools)
have veritysetup         || need+=(cryptsetup-bin)
have cryptsetup          || need+=(cryptsetup-bin)
have qemu-system-x86_64  || need+=(qemu-system-x86)
# Spine's kernel is built from Debian's source with the kernel's own build dependencies.
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
have make                || need+=(make)
have gcc                 || need+=(gcc)
[ -f /usr/include/stdio.h ]        || need+=(libc6-dev)
have bc                  || need+=(bc)
have bison               || need+=(bison)
have flex                || need+=(flex)
have perl                || need+=(perl)
[ -f /usr/include/libelf.h ]       || need+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ]  || need+=(libssl-dev)
# make bench only: it boots Debian's generic kernel, with its modules, for comparison.
have depmod              || need+=(kmod)
have mkfs.ext4           || need+=(e2fsprogs)
have sfdisk              || need+=(fdisk)
have sgdisk              || need+=(gdisk)
have cpio                || need+=(cpio)
have openssl             || need+=(openssl)
have crun                || need+=(crun)
have xz                  || need+=(xz-utils)
have dpkg-deb            || need+=(dpkg)
# UEFI: the firmware machines boot through, and the reference tools the Secure Boot code is
# checked against (signatures, signature lists, FAT).
[ -f /usr/share/OVMF/OVMF_CODE_4M.secboot.fd ] || need+=(ovmf)
have sbverify            || need+=(sbsigntool)
have cert-to-efi-sig-list || need+=(efitools)
have osslsigncode        || need+=(osslsigncode)
have fsck.fat            || need+=(dosfstools)
have mtype               || need+=(mtools)

if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# make bench fetches Debian's kernel package with apt-get download, which needs package lists.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  apt-get update -qq
fi

gobin=$(go env GOPATH)/bin
if [ ! -x "$gobin/staticcheck" ]; then
  echo "deps: installing staticcheck"
  GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
