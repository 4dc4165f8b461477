#define FZ_ROLE WSCH_ROLE_CLIENT
#include "conn_driver.h"
