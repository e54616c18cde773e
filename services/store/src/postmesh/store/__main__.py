from postmesh.common.service import main
from postmesh.store.app import StoreApp
from postmesh.store.settings import StoreSettings

if __name__ == "__main__":
    main(StoreSettings, StoreApp, "store")
