// Package e2e tests DevOps Platform end to end: the built devops binary,
// run on the host, against a manager and three workers in Docker containers
// started by docker-compose, including the failures a real fleet sees (a
// worker container killed, a worker cut off the network, the manager
// restarted).
//
// The tests sit behind the build tag e2e; `make ci-test` builds the images,
// starts the cluster, runs them and tears the cluster down. To run them
// against a cluster of your own:
//
//	make docker-build && docker-compose up -d
//	go test -tags e2e -v ./e2e/...
//
// They read DEVOPS_E2E_MANAGER (localhost:50051), DEVOPS_E2E_BIN
// (../bin/devops), COMPOSE_PROJECT_NAME (to find the containers) and
// DEVOPS_E2E_REQUIRE=1 (fail instead of skipping when Docker or the cluster
// is missing). They skip with a reason when Docker is absent.
//
// The package imports only the root package, for the JSON the CLI prints.
package e2e
