# The flowguard publisher (the users' CLI): a static binary on an empty image.
# deploy/build-images.sh compiles the binary into the build context first.
FROM scratch
COPY publisher /publisher
USER 65532:65532
ENTRYPOINT ["/publisher"]
