"""The Kafka adapters: client options and topics, the validating consumer, the
publisher, reading the whole log, routing checks, restore, the dead-letter tools and
the embedded broker (the only module that knows the embedded broker is Tansu).
"""
