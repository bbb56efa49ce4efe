"""Child process of :func:`bus.integrate.acls.probe_create_support`: asks the broker named
by the ``BUS_*`` environment to create one binding it must refuse, prints the verdict as
one JSON line. Run in a child because a broker's malformed answer can abort librdkafka."""

from __future__ import annotations

import json

from confluent_kafka.admin import AdminClient

from bus.integrate.acls import probe_in_this_process
from bus.kafka.config import KafkaSettings, admin_config

if __name__ == "__main__":
    settings = KafkaSettings()
    print(json.dumps(probe_in_this_process(AdminClient(admin_config(settings, client_id="bus-acl-probe")))))
