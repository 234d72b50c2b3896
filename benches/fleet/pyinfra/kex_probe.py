# Prints the key exchange paramiko (pyinfra's SSH library) negotiates with one lab host,
# using the same known_hosts and key as the benchmark:
#   python kex_probe.py HOST KNOWN_HOSTS KEY
import logging
import sys

import paramiko


class Grab(logging.Handler):
    kex = None

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Kex: "):
            Grab.kex = msg[len("Kex: "):]


log = logging.getLogger("paramiko")
log.setLevel(logging.DEBUG)
log.addHandler(Grab())
host, known_hosts, key = sys.argv[1:4]
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.set_missing_host_key_policy(paramiko.RejectPolicy())
client.connect(host, username="root", key_filename=key, allow_agent=False, look_for_keys=False)
client.close()
print(f"{Grab.kex} (paramiko {paramiko.__version__})")
