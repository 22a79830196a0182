/* admin.c - not written yet. */
#include "sluice.h"
