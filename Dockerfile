# syncd and syncctl in an image FROM scratch: nothing but the two static
# binaries and an empty data directory. Build it with scripts/docker-build.sh,
# which compiles the binaries on the host (CGO_ENABLED=0, -trimpath) into a
# build context of their own: no base image is pulled, none is needed.
#
# Run:  docker run syncstore:dev --node-id n1 --grpc-addr ... (syncd's flags,
# or SYNCD_* variables, or --config FILE). The addresses are what peers and
# clients are told, so give each container addresses they can reach; see
# deploy/compose.yaml for a three-node TLS cluster.
FROM scratch
COPY syncd syncctl /usr/local/bin/
# A named volume mounted here starts as a copy of this directory: owned by
# the syncd user (syncd makes what it writes there 0700).
COPY --chown=10001:10001 data /data
USER 10001:10001
WORKDIR /data
# syncd's --data-dir, unless a flag or --config says otherwise.
ENV SYNCD_DATA_DIR=/data
VOLUME ["/data"]
# gRPC (clients, and Admin and Peer calls between nodes), Raft, gossip.
EXPOSE 7400/tcp 7401/tcp 7402/tcp 7402/udp
ENTRYPOINT ["/usr/local/bin/syncd"]
