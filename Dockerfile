# FlowPilot: one binary serving the GraphQL API.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/flowpilot /usr/local/bin/flowpilot

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/flowpilot --create-home flowpilot
COPY --from=build /usr/local/bin/flowpilot /usr/local/bin/flowpilot
USER flowpilot
WORKDIR /var/lib/flowpilot
ENV FLOWPILOT_HOST=0.0.0.0 FLOWPILOT_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["flowpilot"]
CMD ["serve"]
