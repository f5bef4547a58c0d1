# The commands of this project. `make run` runs the service locally, `make test` runs every
# test against the real PostgreSQL and RabbitMQ, then the short chaos run; `make chaos` runs
# the full one against the release builds; `make rules` checks and unit-tests the alert rules;
# `make manifests` renders and validates the Kubernetes, compose, Grafana, load balancer and
# systemd files.
.PHONY: run test lint fmt services bench chaos policies rules manifests

run:
	bash deploy/run-local.sh

services:
	bash deploy/local-services.sh ensure

test: services rules manifests
	cargo test --workspace --all-targets
	cargo build --bins
	target/debug/chaos --short

rules:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts.test.yml
	promtool check config deploy/prometheus/prometheus.yml

manifests:
	bash deploy/k8s/check.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: services
	bash deploy/bench.sh

chaos: services
	cargo build --release --bins
	target/release/chaos

policies:
	bash deploy/rabbitmq-policies.sh apply
