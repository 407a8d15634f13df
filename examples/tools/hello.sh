#!/bin/sh
echo "hello from cbuild"
