#!/bin/sh
exec /app/bin/server --health
