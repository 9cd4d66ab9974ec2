# vnet-cni — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

# Pinned tool versions, installed into .tools/bin by the Makefile itself.
BUF_VERSION                ?= v1.75.0
PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2
GRPCURL_VERSION            ?= v1.9.3
CNITOOL_VERSION            ?= v1.3.0
CNI_PLUGINS_VERSION        ?= v1.9.1
# Real Kubernetes for the tests, built from the Go module proxy by the scratch modules in
# test/k8s/build (k8s.io/kubernetes with its staging modules replaced; etcd likewise).
K8S_VERSION                ?= v1.35.4
ETCD_VERSION               ?= v3.6.16
CONTROLLER_GEN_VERSION     ?= v0.20.1
CRICTL_VERSION             ?= v1.34.0

# make run: mockarm + cns on embedded defaults, all state under ./.run/.
RUN_DIR  := $(CURDIR)/.run
RUN_SUB  := 00000000-0000-0000-0000-000000000000
RUN_RG   := vnet-rg
RUN_NIC  := node0-nic
# mockarm wants bearer tokens like ARM; make run's cns has no IMDS on loopback, so it uses
# --auth static with the token mockarm is told to accept.
RUN_TOKEN := mock
MOCKARM_FLAGS ?= --listen 127.0.0.1:10080 --state $(RUN_DIR)/mockarm.json --subscription $(RUN_SUB) --resource-group $(RUN_RG) --admin \
                 --static-token $(RUN_TOKEN)
CNS_FLAGS     ?= --arm-endpoint http://127.0.0.1:10080 --auth static --static-token $(RUN_TOKEN) --subscription $(RUN_SUB) --resource-group $(RUN_RG) \
                 --nic $(RUN_NIC) --socket $(RUN_DIR)/cns.sock --state $(RUN_DIR)/cns.db --release-spool $(RUN_DIR)/release-spool \
                 --listen 127.0.0.1:10090 --metrics-listen 127.0.0.1:10092

TEST_TIMEOUT ?= 12m

.PHONY: all build run test fuzz bench bench-deps e2e e2e-deps demo-k8s demo-k8s-down proto proto-check tools lint install demo demo-down clean k8s-bins image bench-cluster generate generate-check

all: build

# grpcnotrace: gRPC without golang.org/x/net/trace (and html/template behind it), which
# nothing here enables; vnet-cni pays every package's init at each exec (README, Performance).
BUILD_TAGS ?= grpcnotrace
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(BUILD_TAGS)' -o bin/ ./cmd/...

$(TOOLS)/.buf-$(BUF_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

$(TOOLS)/.grpcurl-$(GRPCURL_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@touch $@

$(TOOLS)/.cnitool-$(CNITOOL_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)
	@touch $@

# The reference plugins make bench compares against, built as upstream releases them
# (scripts/release.sh: CGO_ENABLED=0, -extldflags -static): a cgo build links libc dynamically,
# and the dynamic loader added about 2.5 ms to every exec of each, flattering our ratios.
REF_CNI := $(CURDIR)/.tools/cni
REF_BUILD := CGO_ENABLED=0 GOBIN=$(REF_CNI) $(GO) install -trimpath -ldflags '-extldflags -static'
$(REF_CNI)/.plugins-$(CNI_PLUGINS_VERSION)-static:
	@mkdir -p $(REF_CNI)
	$(REF_BUILD) github.com/containernetworking/plugins/plugins/main/ptp@$(CNI_PLUGINS_VERSION)
	$(REF_BUILD) github.com/containernetworking/plugins/plugins/ipam/host-local@$(CNI_PLUGINS_VERSION)
	$(REF_BUILD) github.com/containernetworking/plugins/plugins/main/loopback@$(CNI_PLUGINS_VERSION)
	@touch $@

# etcd + kube-apiserver, kubectl, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# cached under .tools/k8s-$(K8S_VERSION) (a stamp per version: a warm run does nothing). Cold:
# ~5 min on 2 cores; one `go build` for the six Kubernetes commands parallelises best.
K8S_BIN := $(CURDIR)/.tools/k8s-$(K8S_VERSION)
K8S_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(p).gitVersion=$(K8S_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) -X $(p).gitTreeState=clean)
K8S_CMDS := kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy
$(K8S_BIN)/.stamp-etcd-$(ETCD_VERSION): test/k8s/build/etcd/go.mod test/k8s/build/etcd/go.sum
	@mkdir -p $(K8S_BIN)
	cd test/k8s/build/etcd && CGO_ENABLED=0 GOFLAGS=-modcacherw $(GO) build -trimpath -ldflags "-s -w" -o $(K8S_BIN)/etcd go.etcd.io/etcd/server/v3
	@touch $@
$(K8S_BIN)/.stamp-k8s: test/k8s/build/k8s/go.mod test/k8s/build/k8s/go.sum
	@mkdir -p $(K8S_BIN)
	cd test/k8s/build/k8s && CGO_ENABLED=0 GOFLAGS=-modcacherw $(GO) build -trimpath -ldflags "$(K8S_LDFLAGS)" -o $(K8S_BIN)/ \
	  $(addprefix k8s.io/kubernetes/cmd/,$(K8S_CMDS))
	@touch $@
k8s-bins: $(K8S_BIN)/.stamp-etcd-$(ETCD_VERSION) $(K8S_BIN)/.stamp-k8s
	@$(K8S_BIN)/kube-apiserver --version && $(K8S_BIN)/etcd --version | head -1
$(TOOLS)/.controller-gen-$(CONTROLLER_GEN_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	@touch $@

# make bench's containerd step: containerd and runc from Debian, crictl from the Go module proxy.
$(TOOLS)/.crictl-$(CRICTL_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)
	@touch $@

bench-deps: $(TOOLS)/.cnitool-$(CNITOOL_VERSION) $(REF_CNI)/.plugins-$(CNI_PLUGINS_VERSION)-static $(TOOLS)/.crictl-$(CRICTL_VERSION)
	@command -v containerd >/dev/null && command -v runc >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null; }

tools: $(TOOLS)/.controller-gen-$(CONTROLLER_GEN_VERSION) $(TOOLS)/.buf-$(BUF_VERSION) $(TOOLS)/.grpcurl-$(GRPCURL_VERSION) $(TOOLS)/.cnitool-$(CNITOOL_VERSION)

# Regenerate the committed Go code from proto/cns/v1/*.proto.
proto: $(TOOLS)/.buf-$(BUF_VERSION)
	buf lint
	buf generate

# Fail if the proto is not lint-clean or the committed generated code is stale.
proto-check: $(TOOLS)/.buf-$(BUF_VERSION)
	buf lint
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	  buf generate --output $$tmp && \
	  diff -r -q $$tmp/proto proto -x '*.proto' -x '*_test.go' -x contract || { echo "generated code is stale: run make proto"; exit 1; }

# Regenerate the NodeNetworkConfig deepcopy code and CRD manifest from cns/api.
API_DIRS := ./cns/api/...
CRD_DIR  := cns/deploy/crd
define controller-gen
	controller-gen object paths=$(API_DIRS) && \
	controller-gen crd paths=$(API_DIRS) output:crd:artifacts:config=$(1)
endef
generate: $(TOOLS)/.controller-gen-$(CONTROLLER_GEN_VERSION)
	$(call controller-gen,$(CRD_DIR))

# Fail if the committed deepcopy code or CRD manifest is stale (the tree is left as it was).
generate-check: $(TOOLS)/.controller-gen-$(CONTROLLER_GEN_VERSION)
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; stale=; \
	  controller-gen crd paths=$(API_DIRS) output:crd:artifacts:config=$$tmp/crd && \
	  { diff -r $$tmp/crd $(CRD_DIR) || stale="CRD manifest"; }; \
	  gen=$$(ls cns/api/*/zz_generated.deepcopy.go); for f in $$gen; do mkdir -p $$tmp/$$(dirname $$f); cp $$f $$tmp/$$f; done; \
	  controller-gen object paths=$(API_DIRS); \
	  for f in $$gen; do cmp -s $$f $$tmp/$$f || stale="$$stale deepcopy code"; cp $$tmp/$$f $$f; done; \
	  [ -z "$$stale" ] || { echo "stale generated$$stale: run make generate"; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); [ -z "$$out" ] || { echo "gofmt: $$out"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/k8s/e2e/

run: build $(TOOLS)/.grpcurl-$(GRPCURL_VERSION)
	@mkdir -p $(RUN_DIR)
	@echo "mockarm on 127.0.0.1:10080, cns on $(RUN_DIR)/cns.sock and 127.0.0.1:10090 (state in $(RUN_DIR)). Try:"
	@echo "  $(TOOLS)/grpcurl -plaintext 127.0.0.1:10090 list"
	@echo "  $(TOOLS)/grpcurl -plaintext 127.0.0.1:10090 cns.v1.PoolService/GetPool"
	@echo "  $(TOOLS)/grpcurl -plaintext -d '{\"container_id\":\"c1\",\"ifname\":\"eth0\"}' unix://$(RUN_DIR)/cns.sock cns.v1.IPAMService/RequestIPs"
	@echo "  $(TOOLS)/grpcurl -plaintext -d '{\"container_id\":\"c1\",\"ifname\":\"eth0\"}' unix://$(RUN_DIR)/cns.sock cns.v1.IPAMService/ReleaseIPs"
	@echo "Ctrl-C stops both."
	@bin/mockarm $(MOCKARM_FLAGS) & mock=$$!; \
	  trap 'kill -TERM $$mock 2>/dev/null; wait $$mock 2>/dev/null' EXIT; \
	  trap 'exit 0' INT TERM; \
	  bin/cns $(CNS_FLAGS)

# Unit and integration tests with the race detector. Tests that need root or network
# namespaces fail (not skip) when CI=true.
# Each fuzz target briefly (FUZZTIME each); the seed corpus lives in testdata/fuzz.
FUZZTIME ?= 5s
FUZZ_TARGETS := FuzzPoolInvariants:./ipampool FuzzRequestValidation:./cns FuzzGarbageCollectValidation:./cns \
                FuzzParseConfig:./plugin FuzzK8sArgs:./plugin FuzzAnswersDecodeAsTheGeneratedCode:./plugin/cnswire
# A run that ends while the fuzzer minimizes a new *interesting* input reports "context deadline
# exceeded" with no failing input: a toolchain artefact, not a finding. Any real finding
# prints "Failing input written to testdata/fuzz/..." and fails the build.
fuzz:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t%%:*} ($(FUZZTIME))"; \
	  if ! $(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $${t##*:} >$$log 2>&1; then \
	    if grep -q 'Failing input' $$log || ! grep -q 'context deadline exceeded' $$log; then cat $$log; exit 1; fi; \
	    echo "  (ended during minimization of an interesting input; no failing input)"; \
	  fi; \
	done

test: build tools k8s-bins lint proto-check generate-check fuzz
	@mkdir -p $(RUN_DIR) && rm -f $(RUN_DIR)/reliability.txt
	VNET_K8S_BIN=$(K8S_BIN) VNET_CONTROLLER_BIN=$(CURDIR)/bin/vnet-controller VNET_REPORT=$(RUN_DIR)/reliability.txt $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	# The plugin's handlers and its cns client again on one processor, as bin/vnet-cni runs them (plugin/oneproc).
	$(GO) test -race -count=1 -cpu 1 ./plugin/ ./plugin/unary/
	@if [ -s $(RUN_DIR)/reliability.txt ]; then echo "reliability figures:"; cat $(RUN_DIR)/reliability.txt; fi

# Performance side by side with ptp + host-local (needs root); writes bench/results.json.
# cns runs with make run's pool flags and its state on disk; the containerd step uses
# Debian's containerd + runc and a pause image built here (no Docker).
# The API-server burst runs the pinned kube-apiserver + etcd (k8s-bins).
bench: build bench-deps k8s-bins
	CGO_ENABLED=0 $(GO) build -trimpath -o $(RUN_DIR)/bench-pause ./test/bench/pause
	CGO_ENABLED=0 $(GO) build -trimpath -o $(RUN_DIR)/bench-cni/nullcni ./test/bench/nullcni
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(BUILD_TAGS)' -o $(RUN_DIR)/bench-nullcns ./test/bench/nullcns # built as cns is
	VNET_K8S_BIN=$(K8S_BIN) bin/vnet-bench --bin bin --ref $(REF_CNI) --cnitool $(TOOLS)/cnitool --crictl $(TOOLS)/crictl \
	  --pause $(RUN_DIR)/bench-pause --null $(RUN_DIR)/bench-cni/nullcni \
	  --null-cns $(RUN_DIR)/bench-nullcns --work $(RUN_DIR)/bench --out bench/results.json

# Cluster mode at scale: NODES simulated nodes (default 1000) in CRD mode with vnet-controller
# (leader killed mid-run), then in direct mode, against one mockarm bucket; one key=value line per mode.
# Also read from the environment: MODES ("crd direct"), PODS (30), WAVES (3), WRITE_BURST/WRITE_RATE
# (200/10, mockarm's bucket and the controller's budget), WARM_WITHIN (10m). Full log: .run/bench-cluster.log.
NODES ?= 1000
bench-cluster: build k8s-bins
	@mkdir -p $(RUN_DIR); log=$(RUN_DIR)/bench-cluster.log; \
	  VNET_K8S_BIN=$(K8S_BIN) VNET_BENCH_CLUSTER=1 NODES=$(NODES) VNET_CONTROLLER_BIN=$(CURDIR)/bin/vnet-controller \
	  $(GO) test -v -count=1 -timeout 90m -run '^TestBenchCluster$$' ./test/cluster/ >$$log 2>&1; rc=$$?; \
	  grep -E '^mode=' $$log; [ $$rc -eq 0 ] || { echo "bench-cluster failed (full log: $$log):"; tail -60 $$log; exit $$rc; }

# Real Kubernetes end to end (needs root): a 2-node cluster of real kubelets (containerd, runc,
# kube-proxy in iptables mode) in the emulated VNet, vnet-cni deployed from cns/deploy with the
# image of make image. containerd, runc, iptables, conntrack and socat come from Debian; the
# reference plugins (loopback, ptp, host-local) are the node's own CNI plugins.
E2E_PKGS := containerd runc iptables conntrack socat
e2e-deps: $(REF_CNI)/.plugins-$(CNI_PLUGINS_VERSION)-static
	@missing=; for b in containerd runc iptables conntrack socat; do command -v $$b >/dev/null || missing=1; done; \
	  [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(E2E_PKGS) >/dev/null; }

E2E_TIMEOUT ?= 30m
E2E_ENV = VNET_K8S_BIN=$(K8S_BIN) VNET_IMAGE=$(CURDIR)/bin/vnet-cni-image.tar VNET_CNI_PLUGINS=$(REF_CNI)
e2e: image k8s-bins e2e-deps
	@mkdir -p $(RUN_DIR); $(E2E_ENV) $(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./test/k8s/e2e/ >$(RUN_DIR)/e2e.log 2>&1; rc=$$?; \
	  grep -E '^\s*(---|PASS|FAIL|ok)|(suite|net|service|egress|lifecycle|start)_test.go:' $(RUN_DIR)/e2e.log; \
	  [ $$rc = 0 ] || { tail -400 $(RUN_DIR)/e2e.log; echo "full log: $(RUN_DIR)/e2e.log"; }; exit $$rc

# The same 2-node cluster for a person: prints how to use kubectl against it; Ctrl-C or
# make demo-k8s-down tears it down.
demo-k8s: image k8s-bins e2e-deps
	$(E2E_ENV) bin/vnet-k8s-demo --work $(RUN_DIR)/demo-k8s

demo-k8s-down: build
	bin/vnet-k8s-demo --down --work $(RUN_DIR)/demo-k8s

# A 2-node emulated VNet with 2 pods per node (needs root); Ctrl-C or make demo-down ends it.
demo: build
	bin/vnet-demo --bin bin --work $(RUN_DIR)/demo

demo-down: build
	bin/vnet-demo --down --work $(RUN_DIR)/demo

# The node image (cns, vnet-cni, install-cni, conflist; FROM scratch) as a tarball, without
# Docker: `ctr -n k8s.io images import <tar>`. The last line is the tarball's path and the reference.
IMAGE_REF ?= localhost/vnet-cni:dev
image: build
	@bin/vnet-image --bin bin --ref $(IMAGE_REF) --out $(CURDIR)/bin/vnet-cni-image.tar

# Install the plugin where kubelet/containerd look for it, its conflist, and the cns daemon.
# DESTDIR stages into another root (packaging).
CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
BIN_DIR      ?= /usr/local/bin
install: build
	install -D -m 0755 bin/vnet-cni $(DESTDIR)$(CNI_BIN_DIR)/vnet-cni
	install -D -m 0644 cmd/vnet-cni/10-vnet.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-vnet.conflist
	install -D -m 0755 bin/cns $(DESTDIR)$(BIN_DIR)/cns

clean:
	rm -rf bin .run
