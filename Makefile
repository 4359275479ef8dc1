# Generated code is checked in; `make generate` reproduces it byte for byte.
.PHONY: generate generate-api generate-proto test build

# The release build, and the one bench/ measures (benchproc.ReleaseBuild):
# static, so no libc or dynamic loader is mapped into every proxy (1.7 MB of
# each process's RSS), and -trimpath for reproducible paths. Symbols stay:
# they are not loaded into memory, and perf needs them to profile.
# bin/ambit-node is the node proxy alone (the same command as `ambit node`):
# what it does not link, it does not map into every node's memory. The
# grpcnotrace tag keeps golang.org/x/net/trace (and html/template) out of
# gRPC: ambit never enables gRPC tracing, and that import alone is 3.4 MB of
# every node proxy's RSS (docs/benchmarks.md).
RELEASE_FLAGS = -trimpath -tags grpcnotrace
build:
	CGO_ENABLED=0 go build $(RELEASE_FLAGS) -o bin/ambit ./cmd/ambit
	CGO_ENABLED=0 go build $(RELEASE_FLAGS) -o bin/ambit-node ./cmd/ambit-node

generate: generate-api generate-proto

generate-api:
	go tool -modfile=tools/go.mod controller-gen object paths=./api/... 
	go tool -modfile=tools/go.mod controller-gen crd:crdVersions=v1 paths=./api/... output:crd:artifacts:config=api/crds

# protoc-gen-go and protoc-gen-go-grpc come from the versions pinned in go.mod
# (tool directives) and buf from tools/go.mod; buf.gen.yaml points at bin/, so
# no globally installed plugin can change the output. Stale files are removed
# first so a deleted .proto cannot leave its *.pb.go behind.
generate-proto:
	go build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	go build -o bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	find proto -name '*.pb.go' -delete
	go tool -modfile=tools/go.mod buf lint
	go tool -modfile=tools/go.mod buf generate

test:
	go test -race ./...
