# Generated code is checked in; `make generate` reproduces it byte for byte.
.PHONY: generate generate-api generate-proto test build

build:
	go build -o bin/ambit ./cmd/ambit

generate: generate-api generate-proto

generate-api:
	go tool -modfile=tools/go.mod controller-gen object paths=./api/... 
	go tool -modfile=tools/go.mod controller-gen crd:crdVersions=v1 paths=./api/... output:crd:artifacts:config=api/crds

generate-proto:
	go build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	PATH="$(CURDIR)/bin:$$PATH" go tool -modfile=tools/go.mod buf generate

test:
	go test -race ./...
