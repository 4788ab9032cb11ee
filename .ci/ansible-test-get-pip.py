# Stand-in for the get-pip.py that ansible-test downloads from a host this machine cannot reach (it finds this
# copy in its cache first; the Makefile puts it there). It bootstraps pip from the interpreter's bundled wheel,
# then installs the pip asked for with the machine's normal pip configuration (CA bundle, mirrors). ensurepip
# runs in a subprocess: run in-process it switches pip's configuration files off.
import subprocess
import sys

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)
