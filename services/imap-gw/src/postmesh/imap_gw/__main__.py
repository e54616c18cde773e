from postmesh.common.service import main
from postmesh.imap_gw.app import ImapGateway
from postmesh.imap_gw.settings import ImapSettings

if __name__ == "__main__":
    main(ImapSettings, ImapGateway, "imap-gw")
