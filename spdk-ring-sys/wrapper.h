/* The SPDK headers spdk-ring-sys binds. Only public headers; nothing copied. */
#include <spdk/stdinc.h>
#include <spdk/version.h>
#include <spdk/env.h>
#include <spdk/init.h>
#include <spdk/rpc.h>
#include <spdk/event.h>
#include <spdk/thread.h>
#include <spdk/bdev.h>
#include <spdk/bdev_module.h>
#include <spdk/blob.h>
#include <spdk/blob_bdev.h>
#include <spdk/nvme.h>
#include <spdk/nvme_spec.h>
#include <spdk/json.h>
#include <spdk/log.h>
#include <spdk/util.h>
#include <spdk/string.h>
