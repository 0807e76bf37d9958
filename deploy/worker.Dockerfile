# The flowguard worker: a static binary on an empty image, so the image builds
# without pulling anything. deploy/build-images.sh compiles the binary into the
# build context first.
FROM scratch
COPY worker /worker
# No shell, no users database: run as an unprivileged numeric id.
USER 65532:65532
ENTRYPOINT ["/worker"]
