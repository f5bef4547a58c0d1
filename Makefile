# The commands of this project. `make run` runs the service locally, `make test` runs every
# test against the real PostgreSQL and RabbitMQ.
.PHONY: run test lint fmt services bench policies

run:
	bash deploy/run-local.sh

services:
	bash deploy/local-services.sh ensure

test: services
	cargo test --workspace --all-targets

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: services
	bash deploy/bench.sh

policies:
	bash deploy/rabbitmq-policies.sh apply
