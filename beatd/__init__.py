"""beatd: decides when jobs run and publishes them to RabbitMQ."""
