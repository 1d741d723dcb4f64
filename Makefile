# metal: build, test, benchmark.
#
#   make test    install what the tests need, then vet and test everything
#   make unit    the tests that need no root, namespace, QEMU or Debian package
#   make lab     the main demonstration: provision a QEMU lab end to end
#   make bench   benchmarks, with metal beside its peers, as a table
#   make build   the binary, in bin/metal
#   make fuzz    every fuzz target for FUZZTIME (default 60s) each
#   make deb     the Debian package, in bin/metal_<version>_amd64.deb

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
# Modules come from the Go module proxy; bmclib's are not in the checksum DB.
export GONOSUMDB := github.com/bmc-toolbox
# A static binary: the install agent runs metal itself as /init of an
# initramfs, where there is no C library.
export CGO_ENABLED := 0
GO ?= go
FUZZTIME ?= 60s
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# Debian packages the tests drive as real peers: QEMU with its iPXE ROMs and
# OVMF, iPXE binaries, DHCP and TFTP clients, OpenIPMI's ipmi_sim, etcd,
# OpenSSH, the Redfish clients the virtual BMC is checked with, the tools
# that build the bootable test disk, and Chromium for the web console; the
# Python modules sushy-tools runs on (sushy-tools itself is not packaged:
# its test runs when METAL_SUSHY_TOOLS names a source tree of it), and
# those Debian's cloud-init imports (its test fetches cloud-init itself with
# apt-get download and runs it unpacked, never installed).
TEST_PACKAGES := qemu-system-x86 qemu-utils ipxe ipxe-qemu ovmf openipmi ipmitool \
	busybox-static udhcpc isc-dhcp-client dhcpcd5 tftp-hpa atftp curl cpio \
	iproute2 iputils-ping etcd-server openssh-server openssh-client \
	redfishtool python3-sushy zstd xz-utils gzip util-linux kmod \
	mtools dosfstools syslinux syslinux-common systemd-boot-efi chromium nftables \
	python3-flask python3-tenacity python3-bcrypt python3-webob python3-pbr \
	isc-dhcp-relay kea-admin xorriso isolinux qemu-block-extra \
	python3-yaml python3-jinja2 python3-configobj python3-jsonpatch python3-jsonschema \
	python3-netifaces python3-oauthlib python3-requests python3-serial
# isc-dhcp-relay's package enables a relay service; the tests start their
# own dhcrelay in namespaces, so the host's is kept stopped and disabled.
define no_relay_service
	@if [ -e /etc/init.d/isc-dhcp-relay ]; then \
		SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
		$$SUDO systemctl disable --now isc-dhcp-relay >/dev/null 2>&1 || \
		{ $$SUDO /etc/init.d/isc-dhcp-relay stop >/dev/null 2>&1; $$SUDO update-rc.d isc-dhcp-relay disable >/dev/null 2>&1; true; }; \
	fi
endef
# The peers `make bench` measures metal against.
BENCH_PACKAGES := dnsmasq-base tftpd-hpa nginx-light kea-admin kea-dhcp4-server atftp \
	iproute2 valgrind time

.PHONY: all build test vet unit lab bench fuzz deps test-deps bench-deps clean deb test-packaging

all: build

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/metal ./cmd/metal

# apt-get only when something is missing, so a prepared machine stays fast.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages: $$missing"; \
		SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(GO) mod download

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES))
	$(call no_relay_service)

bench-deps: deps
	$(call apt_install,$(TEST_PACKAGES) $(BENCH_PACKAGES))
	$(call no_relay_service)

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt: these files need formatting (gofmt -w them):"; echo "$$unformatted"; exit 1; fi

# Everything, internal/layering's import check among it.
test: test-deps build vet test-packaging
	bin/metal validate hcl-examples/*.hcl packaging/site.hcl
	bin/metal fmt -check hcl-examples/*.hcl packaging/site.hcl
	$(GO) test -timeout 40m ./...

# No root, no apt: tests that need the host skip themselves in a -short run
# (internal/testenv).
unit:
	$(GO) test -short -timeout 5m ./...

# The Debian package (packaging/): nfpm, pinned in packaging/go.mod as a
# tool, packs the static binary with the unit, the conffile, man pages and
# completions generated from the binary's own commands. A version without
# a v1.2.3 tag is 0.0~gitYYYYMMDD.SHA, below any release.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo $${v#v} | tr - '~' || \
	echo 0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$$(git rev-parse --short HEAD 2>/dev/null || echo dev))
DEB := bin/metal_$(DEB_VERSION)-1_amd64.deb
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

deb: deps
	rm -rf bin/deb && mkdir -p bin/deb/man bin/deb/completion
	$(GO) build -trimpath -ldflags "-s -w -X main.version=$(DEB_VERSION)" -o bin/deb/metal ./cmd/metal
	bin/deb/metal docs --format man bin/deb/man
	gzip -9n bin/deb/man/*.1
	for sh in bash zsh fish; do bin/deb/metal completion $$sh > bin/deb/completion/metal.$$sh; done
	printf 'metal (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- metal developers <metal@example.org>  %s\n' \
		'$(DEB_VERSION)' "$$(git rev-parse HEAD 2>/dev/null || echo source)" "$$(date -R -u -d @$(SOURCE_DATE_EPOCH))" \
		| gzip -9n > bin/deb/changelog.Debian.gz
	rm -f bin/metal_*_amd64.deb
	cd packaging && DEB_VERSION='$(DEB_VERSION)' $(GO) tool nfpm pkg --packager deb --config nfpm.yaml --target ../$(DEB)
	@echo "Built $(DEB)"

# promtool comes from Debian's prometheus package, unpacked into a cache
# and never installed (installing would start a Prometheus server).
PROMTOOL_CACHE ?= /var/cache/metal-test/prometheus
PROMTOOL := $(PROMTOOL_CACHE)/usr/bin/promtool
$(PROMTOOL):
	@set -e; mkdir -p $(PROMTOOL_CACHE)/deb; cd $(PROMTOOL_CACHE)/deb; rm -f prometheus_*.deb; \
	command -v dpkg-deb >/dev/null; \
	apt-get download prometheus 2>/dev/null || { SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); $$SUDO apt-get update -qq; apt-get download prometheus; }; \
	dpkg-deb -x prometheus_*.deb $(PROMTOOL_CACHE)
	$(PROMTOOL) --version | head -1

# The shipped alert rules (promtool check and unit tests), the dashboard's
# queries (as recording rules promtool parses), and the package itself
# (packaging/check-deb: contents, conffile, man pages, the unit under
# systemd-analyze, lintian).
test-packaging: $(PROMTOOL) deb
	$(call apt_install,lintian systemd man-db)
	$(PROMTOOL) check rules packaging/prometheus/metal-alerts.yml
	cd packaging/prometheus && $(PROMTOOL) test rules metal-alerts_test.yml
	packaging/dashboard-rules packaging/grafana/metal.json > bin/deb/dashboard-rules.yml
	$(PROMTOOL) check rules bin/deb/dashboard-rules.yml
	packaging/check-deb $(DEB)

# The QEMU lab (metal lab --help): QEMU with its iPXE ROMs and OVMF, the
# BMC simulator, and what the bootable test disk image is built from. The
# agent's and the test disk's kernels are fetched with apt-get download into
# a cache, never installed on this machine.
LAB_PACKAGES := qemu-system-x86 qemu-utils ipxe ipxe-qemu ovmf openipmi ipmitool iproute2 \
	busybox-static cpio dosfstools mtools syslinux syslinux-common systemd-boot-efi
LAB_DIR ?= .metal-lab
LAB_MACHINES ?= 2
LAB_UEFI ?= 1
# auto: KVM if a probe guest runs under it, else TCG (slower); or kvm, tcg.
LAB_ACCEL ?= auto
lab: deps
	$(call apt_install,$(LAB_PACKAGES))
	@[ -n "$$(ls /var/lib/apt/lists/*_Packages 2>/dev/null)" ] || { SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); $$SUDO apt-get update -qq; }
	$(MAKE) --no-print-directory build
	@set -e; SUDO=$$( [ $$(id -u) -eq 0 ] || echo sudo ); \
	$$SUDO bin/metal lab up --dir $(LAB_DIR) --machines $(LAB_MACHINES) --uefi $(LAB_UEFI) --accel $(LAB_ACCEL); \
	$$SUDO bin/metal lab apply --dir $(LAB_DIR); \
	echo; $$SUDO bin/metal lab status --dir $(LAB_DIR); \
	echo; echo "Serial logs: $(LAB_DIR)/vms/*/serial.log   metal's logs: $(LAB_DIR)/logs/"; \
	echo "Look around:"; \
	echo "  $$SUDO bin/metal lab status --dir $(LAB_DIR)"; \
	echo "  $$SUDO bin/metal lab console --dir $(LAB_DIR) vm-2      (Ctrl-] leaves)"; \
	echo "  grep -l metal-lab-booted-from-disk $(LAB_DIR)/vms/*/serial.log   (VMs that booted their installed disk)"; \
	echo "  $$SUDO bin/metal lab exec --dir $(LAB_DIR) -- bin/metal bmc status --site $(LAB_DIR)/site.hcl"; \
	echo "Tear down:"; \
	echo "  $$SUDO bin/metal lab down --dir $(LAB_DIR)"

bench: bench-deps build
	$(GO) run ./cmd/metal-bench --metal bin/metal --out bench-results --readme README.md

fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME); \
		done; \
	done

clean:
	rm -rf bin bench-results
