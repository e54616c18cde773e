from postmesh.common.service import main
from postmesh.pop3_gw.server import Pop3Service
from postmesh.pop3_gw.settings import Pop3Settings

if __name__ == "__main__":
    main(Pop3Settings, Pop3Service, "pop3-gw")
