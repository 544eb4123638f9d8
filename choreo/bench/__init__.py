"""`choreo bench`: orders through the gateway of a running stack (or one it starts), the saga's
throughput, latency and CPU per saga, and the ceilings and synchronous baseline they are judged
against, all measured in the same run on the same machine."""
