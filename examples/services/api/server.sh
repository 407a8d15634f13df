#!/bin/sh
while true; do echo hi; done
