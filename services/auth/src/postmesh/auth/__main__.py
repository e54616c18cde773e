from postmesh.auth.app import AuthServiceApp
from postmesh.auth.settings import AuthSettings
from postmesh.common.service import main

if __name__ == "__main__":
    main(AuthSettings, AuthServiceApp, "auth")
