# Stand-in for the get-pip.py that ansible-test downloads from a host this machine cannot reach. ansible-test
# runs it inside each new venv with a scrubbed environment (no PIP_CERT), so it names the machine's CA bundle
# itself when there is one, bootstraps pip from the interpreter's bundled wheel, then installs the pip asked for.
import ensurepip
import os
import subprocess
import sys

CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt'
if os.path.exists(CA_BUNDLE):
    os.environ.setdefault('PIP_CERT', CA_BUNDLE)
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
