# wasmshim: build, test and demo on Debian 12 (as root).
#   make demo             a private containerd runs a Wasm image through our shim
#   make test             every test (installs missing apt packages first)
#   make soak             20,000 create/start/wait/delete cycles per engine (make test: 2,000)
#   make bench [QUICK=1]  start latency, memory, density against runc
#                         (DOCKER_ONLY=1: only docker run --rm, report in target/bench)
PREFIX  ?= /usr/local/bin
ENGINE  ?= wasmtime
CARGO   ?= cargo
RELEASE := target/release

# Debian packages the build, the tests and the demo need.
APT_PACKAGES := containerd runc clang lld wasi-libc libclang-rt-14-dev-wasm32 \
                busybox-static protobuf-compiler pkg-config ca-certificates \
                libseccomp-dev util-linux iproute2 containernetworking-plugins \
                docker.io podman

# WasmEdge is built only where libwasmedge is found (WASMEDGE_DIR, or where wasmedge-sys looks).
WASMEDGE_DIR ?= $(firstword $(foreach d,/usr/local $(HOME)/.wasmedge,$(if $(wildcard $(d)/include/wasmedge/wasmedge.h),$(d))))
export WASMEDGE_DIR
WASMEDGE_FOUND := $(if $(WASMEDGE_DIR),$(wildcard $(WASMEDGE_DIR)/include/wasmedge/wasmedge.h))
# The one engine list: engines.txt (name, and the system library its shim needs).
ENGINE_TABLE := $(shell awk '!/^\#/ && NF { print $$1 ":" $$2 }' engines.txt)
ALL_ENGINES  := $(foreach e,$(ENGINE_TABLE),$(firstword $(subst :, ,$(e))))
# An engine is built when it needs no library, or needs libwasmedge and it is found.
buildable = $(if $(filter -,$(2)),$(1),$(if $(and $(filter libwasmedge,$(2)),$(WASMEDGE_FOUND)),$(1)))
ENGINES ?= $(strip $(foreach e,$(ENGINE_TABLE),$(call buildable,$(word 1,$(subst :, ,$(e))),$(word 2,$(subst :, ,$(e))))))
# The integration tests and the bench require exactly these shims (missing or stale: failure).
export WASMSHIM_ENGINES := $(ENGINES)

# Every cargo command below selects the same packages, and those of `make
# test`, `bench` and `soak` build targets of all kinds (`build-all`), so cargo
# resolves one set of features for them and compiles each crate once: a
# command with another selection (say `-p wasmshim`) unifies other features
# and compiles wasmtime again, ~10 minutes on 2 cores. `make build` (the
# binaries, for `demo` and `install`) resolves its own set without the tests'
# dev-dependencies. The WasmEdge shim is selected only where its library is
# found.
SELECTION := --workspace $(if $(filter wasmedge,$(ENGINES)),,--exclude containerd-shim-wasmedge-v1)
export WASMSHIM_CARGO_SELECTION := $(SELECTION)
ifneq ($(WASMEDGE_FOUND),)
export LD_LIBRARY_PATH := $(WASMEDGE_DIR)/lib64:$(WASMEDGE_DIR)/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
endif

.PHONY: all deps build build-all install test unit integration soak check-wasmedge demo bench lint fmt clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }

# Where WasmEdge's static library is installed too (`libwasmedge.a`: its
# `*_static` release archive), the WasmEdge engine binary links it: a new
# shim group's template then has no libwasmedge.so (and LLVM) to relocate
# at its exec (docs/process-model.md). It is linked by a cargo command of
# its own: with the feature in the workspace's, every binary that links the
# library (the WasmEdge front, the wasmtime shim, the CLIs) would pull in
# WasmEdge and LLVM with their static constructors, 10 ms at each exec of
# the wasmtime shim (measured). The second command compiles only
# wasmedge-sys, wasmedge-sdk, the library and that binary again.
# `make WASMEDGE_STATIC=` links the shared library instead.
WASMEDGE_STATIC ?= $(if $(filter wasmedge,$(ENGINES)),$(wildcard $(WASMEDGE_DIR)/lib/libwasmedge.a))
STATIC_ENGINE = $(if $(WASMEDGE_STATIC),$(CARGO) build --release $(SELECTION) --features containerd-shim-wasmedge-v1/static --bin containerd-shim-wasmedge-v1-engine)

# The binaries: shims, CLIs, demo and bench (what `make demo` needs).
build: deps
	$(CARGO) build --release $(SELECTION) --bins
	$(STATIC_ENGINE)
	@$(foreach e,$(filter-out $(ENGINES),$(ALL_ENGINES)),echo "skipping containerd-shim-$(e)-v1: its library was not found (WasmEdge: install 0.17.1 and set WASMEDGE_DIR)";)

# Every target, tests and benchmarks too, with the tests' feature set (their
# dev-dependencies unify features a build of the binaries alone does not).
build-all: deps
	$(CARGO) build --release $(SELECTION) --all-targets
	$(STATIC_ENGINE)
	@$(foreach e,$(filter-out $(ENGINES),$(ALL_ENGINES)),echo "skipping containerd-shim-$(e)-v1: its library was not found (WasmEdge: install 0.17.1 and set WASMEDGE_DIR)";)

install: build
	install -d $(PREFIX)
	install -m 0755 $(foreach e,$(ENGINES),$(RELEASE)/containerd-shim-$(e)-v1) $(RELEASE)/wasmshim $(RELEASE)/wasmshim-oci $(PREFIX)/
	@# An engine with a front binary (WasmEdge) has its engine binary beside it.
	@for e in $(ENGINES); do s=$(RELEASE)/containerd-shim-$$e-v1-engine; \
		if [ -e $$s ]; then echo install -m 0755 $$s $(PREFIX)/; install -m 0755 $$s $(PREFIX)/; fi; done

test: build-all unit check-wasmedge integration
	$(MAKE) --no-print-directory bench QUICK=1

# Unit tests of every crate (with WasmEdge found, the library's tests cover
# both engines).
unit:
	$(CARGO) test --release $(SELECTION) --lib --bins

integration:
	$(CARGO) test --release $(SELECTION) --test '*'

soak: build-all
	WASMSHIM_CHURN_CYCLES=20000 $(CARGO) test --release $(SELECTION) --test churn

check-wasmedge:
ifeq ($(WASMEDGE_FOUND),)
	DOCS_RS=1 $(CARGO) check -p wasmshim --no-default-features --features wasmedge
	@echo "SKIPPED WasmEdge run tests: libwasmedge not found (install WasmEdge 0.17.1, set WASMEDGE_DIR); the wasmedge engine was type-checked only"
endif

demo: build
	$(RELEASE)/wasmshim-demo --engine $(ENGINE)

bench: build-all
	$(RELEASE)/wasmshim-bench $(if $(QUICK),--quick) $(if $(DOCKER_ONLY),--docker-only) $(if $(HTTP_ONLY),--http-only) $(if $(MEMORY_ONLY),--memory-only)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets -- -D warnings
	DOCS_RS=1 $(CARGO) clippy -p wasmshim --no-default-features --features wasmedge -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
