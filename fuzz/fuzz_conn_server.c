#define FZ_ROLE WSCH_ROLE_SERVER
#include "conn_driver.h"
