#!/bin/sh
# Prints the machine it runs on and the one it was built on.
echo "hello from $(uname -m) (built on $(cat /layers/examples_hello-arch/app/built-on))"
