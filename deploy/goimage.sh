#!/usr/bin/env bash
# Builds kitmesh/go:local, a stand-in for the golang image that
# deploy/Dockerfile starts FROM, out of this machine's own Go toolchain:
# /usr/local/go (statically linked), Debian's static busybox as /bin/sh,
# the CA certificates (for the module proxy) and an empty /tmp. No registry
# is needed. Built once; delete the image to build it again.
#
#   docker build -f deploy/Dockerfile --build-arg GO_IMAGE=kitmesh/go:local .
set -euo pipefail
image=kitmesh/go:local
if docker image inspect "$image" >/dev/null 2>&1; then
	exit 0
fi
[ -x /usr/local/go/bin/go ] || { echo "goimage: /usr/local/go missing" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "goimage: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/local" "$root/etc/ssl/certs" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in sh ls cat mkdir rm cp mv env; do ln -s busybox "$root/bin/$applet"; done
cp -a /usr/local/go "$root/usr/local/go"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
tar -C "$root" -c . | docker import \
	--change 'ENV PATH=/usr/local/go/bin:/bin' \
	--change 'ENV HOME=/root' \
	--change 'ENV GOPATH=/root/go' \
	--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
	--change 'WORKDIR /' \
	- "$image" >/dev/null
echo "goimage: $image from $(/usr/local/go/bin/go version)"
