# nats-server compiled from the version in go.mod, on an empty image: for machines
# that cannot pull the official nats image. Like the official image, the entry point
# is /nats-server and the command its arguments, so docker-compose.yml runs either.
FROM scratch
COPY nats-server /nats-server
EXPOSE 4222 6222 8222
# JetStream's store: a volume, outside the container's copy-on-write layer.
VOLUME ["/data"]
ENTRYPOINT ["/nats-server"]
CMD ["--jetstream", "--store_dir", "/data"]
