# The fleet benchmark's pyinfra equivalent of kfix's persist-ip-forward (F3) and
# service-masquerade (F2): pyinfra's own sysctl (runtime + persisted line) and iptables
# operations. Targets and connection data come from the generated inventory.
from pyinfra.operations import iptables, server

server.sysctl(
    name="net.ipv4.ip_forward = 1 at runtime and in /etc/sysctl.conf",
    key="net.ipv4.ip_forward",
    value=1,
    persist=True,
    persist_file="/etc/sysctl.conf",
)

iptables.rule(
    name="MASQUERADE from the node network to the pod network",
    table="nat",
    chain="POSTROUTING",
    source="10.250.0.0/16",
    destination="172.16.0.0/12",
    jump="MASQUERADE",
)
